//! What the store tells the metrics after each commit: instructions
//! that finished, escalated or were first acknowledged, requests closed,
//! personal data erased, values resealed.

use opentelemetry::KeyValue;

use super::Metrics;
use crate::domain::{InstructionState, InstructionView};
use crate::store::{ClosedRequest, StoreObserver};

impl StoreObserver for Metrics {
    fn instruction_changed(&self, v: &InstructionView) {
        let p = KeyValue::new("processor", v.processor_id.to_string());
        if v.state.is_terminal() {
            self.instructions_finished
                .add(1, &[p, KeyValue::new("state", v.state.as_str())]);
        } else if v.state == InstructionState::Escalated {
            self.escalations.add(1, &[p]);
        } else if v.state == InstructionState::Acknowledged && v.reminders == 0 {
            // The first acknowledgement (a reminder's does not count again).
            if let (Some(first), Some(ack)) = (v.first_instructed_at, v.acknowledged_at) {
                let secs = (ack - first).num_milliseconds().max(0) as f64 / 1000.0;
                self.time_to_acknowledge.record(secs, &[p]);
            }
        }
    }

    fn request_closed(&self, c: &ClosedRequest) {
        self.requests_completed.add(
            1,
            &[
                KeyValue::new("kind", c.kind.as_str()),
                KeyValue::new("jurisdiction", c.jurisdiction.as_str()),
                KeyValue::new("outcome", c.outcome.as_str()),
            ],
        );
    }

    fn personal_data_erased(&self, requests: usize, suppressed: usize) {
        self.requests_erased.add(requests as u64, &[]);
        self.suppression_added.add(suppressed as u64, &[]);
    }

    fn resealed(&self, values: u64, fingerprints: u64) {
        self.resealed
            .add(values, &[KeyValue::new("what", "values")]);
        self.resealed
            .add(fingerprints, &[KeyValue::new("what", "fingerprints")]);
    }
}
