//! Who is calling, and what they may do.
//!
//! Every call is made by a [`Caller`]: a principal (a service or a person,
//! with roles), a processor (by its callback token), or, on a server that
//! authenticates no one, an anonymous caller. A principal is identified by
//! one of three credentials, checked in this order:
//!
//! 1. an `authorization: Bearer <token>` header holding a static API token
//!    listed (by its SHA-256) in the auth file, or a JWT verified against
//!    the configured JWKS (issuer, audience, expiry and not-before checked;
//!    the principal and roles from configured claims);
//! 2. the client certificate of a mutual-TLS connection, mapped to a
//!    principal by its subject's common name or a SAN.
//!
//! A bearer token starting `dsrcb_` is a processor's callback token: it
//! identifies the processor, for the processor methods of
//! `InstructionService` only.
//!
//! Roles ([`Role`]) say which RPCs a principal may call; the one table is
//! [`policy`]. The [`layer`] identifies the caller of every call, refuses
//! what the table refuses (`UNAUTHENTICATED` without a valid credential,
//! `PERMISSION_DENIED` without the role) and hands the caller to the
//! services, which record it as the actor of every change and confine a
//! submitter to its own requests. A watch, which may stay open for days,
//! asks again while it runs ([`recheck`]).

pub mod config;
pub mod identify;
pub mod jwt;
pub mod layer;
pub mod policy;
pub mod recheck;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::domain::{Actor, PrincipalName, ProcessorId};

/// What a principal may do (see [`policy`] for the RPCs of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submits requests; reads, watches and cancels the requests it
    /// submitted.
    Submitter,
    /// Reads everything: requests, instructions, records, processors.
    /// Changes nothing.
    Auditor,
    /// Cancels any request; lists, retries and resolves instructions.
    Operator,
    /// Registers, updates and disables processors; rotates their tokens.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Submitter, Role::Auditor, Role::Operator, Role::Admin];

    /// Its name in the auth file and in JWT claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An authenticated service or person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its name, recorded as the actor of its changes.
    pub name: PrincipalName,
    /// What it may do.
    pub roles: BTreeSet<Role>,
}

/// Why the [`layer`] refused a call's credential, riding with a call of
/// the HTTP callback API (which refuses in JSON, in the service) instead of
/// a [`Caller`].
#[derive(Clone, Debug)]
pub struct Refused(pub tonic::Status);

/// Whoever makes a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated principal.
    Principal(Principal),
    /// A processor, by its callback token.
    Processor(ProcessorId),
    /// Nobody in particular: the server authenticates no one.
    Anonymous,
}

impl Caller {
    /// The caller of `request`, as the [`layer`] found it (anonymous when
    /// no layer ran, as in a server built without authentication).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }

    /// Who its changes are recorded as made by.
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Principal(p) => Actor::Principal(p.name.clone()),
            Caller::Processor(p) => Actor::Processor(p.clone()),
            Caller::Anonymous => Actor::Anonymous,
        }
    }

    /// Whether the caller may see every request, not only those it
    /// submitted: auditors and operators, and anyone on a server that
    /// authenticates no one. In a call, the caller holds only the roles
    /// that allow its method ([`policy::acting`]).
    pub fn sees_all_requests(&self) -> bool {
        match self {
            Caller::Principal(p) => {
                p.roles.contains(&Role::Auditor) || p.roles.contains(&Role::Operator)
            }
            Caller::Processor(_) => false,
            Caller::Anonymous => true,
        }
    }
}
