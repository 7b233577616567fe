//! `ListInstructions`: the operators' view of instructions, a page at a
//! time, each with its delivery history and the data records its answer
//! brought (those that open with the server's keys).

use super::error::ApiResult;
use super::instruction_service::InstructionApi;
use super::page::{bind, instruction_filters, page_size, page_token, unbind};
use crate::domain::Violations;
use crate::pb;
use crate::store::{DeliveryAttemptRow, InstructionCursor, InstructionFilter, StoreError};
use crate::wire;

fn attempt_pb(a: &DeliveryAttemptRow) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        attempt: a.attempt,
        started_at: Some(wire::timestamp(a.started_at)),
        finished_at: wire::opt_timestamp(a.finished_at),
        result: a.result.as_str().to_string(),
        error_code: a.error_code.clone().unwrap_or_default(),
        error_message: a.error_message.clone().unwrap_or_default(),
    }
}

impl InstructionApi {
    /// One page of `ListInstructions`.
    pub(super) async fn list(
        &self,
        req: pb::ListInstructionsRequest,
    ) -> ApiResult<pb::ListInstructionsResponse> {
        let mut v = Violations::new();
        let size = v.take("page_size", page_size(req.page_size));
        let state = v
            .take("state", wire::instruction_state(req.state))
            .flatten();
        let processor = (!req.processor_id.is_empty())
            .then(|| {
                v.take(
                    "",
                    wire::parse_processor_id(&req.processor_id, "processor_id"),
                )
            })
            .flatten();
        let request = (!req.request_id.is_empty())
            .then(|| v.take("", wire::parse_request_id(&req.request_id, "request_id")))
            .flatten();
        let order = v
            .take("order_by", wire::instruction_order(req.order_by))
            .unwrap_or_default();
        let due_before = v
            .take("", wire::parse_timestamp(req.due_before, "due_before"))
            .flatten();
        let filters = instruction_filters(&req);
        let after = page_token(&req.page_token).and_then(|t| {
            v.take(
                "page_token",
                unbind(t, &filters).and_then(|k| InstructionCursor::parse(&k, order)),
            )
        });
        let (Some(size), true) = (size, v.is_empty()) else {
            return Err(v.into());
        };
        let filter = InstructionFilter {
            state,
            processor,
            request,
            due_before,
            overdue_at: req.overdue.then(|| self.clock.now()),
            needs_attention: req.needs_attention,
            order,
        };
        let page = self
            .store
            .list_instructions(&filter, after.as_ref(), size)
            .await?;
        let ids: Vec<_> = page.instructions.iter().map(|i| i.id).collect();
        let mut history = self.store.attempts(&ids).await?;
        // The data access answers brought, sealed apart from their results.
        let with_records = page.instructions.iter().filter(|i| i.data_records > 0);
        let with_records: Vec<_> = with_records.map(|i| i.id).collect();
        let mut records = self.store.data_records_of(&with_records).await?;
        let mut instructions = Vec::with_capacity(page.instructions.len());
        for i in &page.instructions {
            let attempts = history.remove(&i.id).unwrap_or_default();
            let mut instruction = pb::Instruction {
                history: attempts.iter().map(attempt_pb).collect(),
                ..wire::instruction(i)
            };
            if let (Some(result), Some(opened)) =
                (instruction.result.as_mut(), records.remove(&i.id))
            {
                match opened {
                    Ok(opened) => result.records = wire::data_records_pb(&opened),
                    // One instruction's records that do not open leave the
                    // rest of the page readable, and say so.
                    Err(StoreError::Sealed(why)) => {
                        tracing::warn!(instruction_id = %i.id, %why, "data records do not open");
                        instruction.records_unreadable = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            instructions.push(instruction);
        }
        Ok(pb::ListInstructionsResponse {
            instructions,
            next_page_token: page
                .next
                .map(|c| bind(&c.key(), &filters))
                .unwrap_or_default(),
        })
    }
}
