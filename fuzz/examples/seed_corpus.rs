//! Writes a valid input for every RPC into the corpus of its service's fuzz
//! target, one for every callback route into `callback_body`'s, one for
//! every kind of processor answer into `processor_answer`'s, and the
//! example page tokens into `page_token`'s, so that a run
//! starts from inputs that get past the first checks. The corpus stays
//! out of git; run this once before the first `cargo fuzz run`.

use std::fs;
use std::path::Path;

use dsr_orchestrator_fuzz::replies::REPLIES;
use dsr_orchestrator_fuzz::rpc::{self, BODIES, Rpc};

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let targets: [(&str, &[Rpc]); 4] = [
        ("request_service", &rpc::REQUEST_SERVICE),
        ("processor_service", &rpc::PROCESSOR_SERVICE),
        ("instruction_service", &rpc::INSTRUCTION_SERVICE),
        ("data_protection_service", &rpc::DATA_PROTECTION_SERVICE),
    ];
    for (target, service) in targets {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir)?;
        for &rpc in service {
            let mut input = vec![rpc::selector(rpc)];
            input.extend(rpc.example());
            fs::write(dir.join(format!("example-{rpc:?}")), input)?;
        }
    }
    let bodies = BODIES.map(|b| (format!("{b:?}"), b.example()));
    selected(&corpus.join("callback_body"), &bodies)?;
    let replies = REPLIES.map(|r| (format!("{r:?}"), r.example()));
    selected(&corpus.join("processor_answer"), &replies)?;
    let dir = corpus.join("page_token");
    fs::create_dir_all(&dir)?;
    for (i, token) in rpc::example_page_tokens().iter().enumerate() {
        fs::write(dir.join(format!("example-{i}")), token)?;
    }
    println!("seeded {}", corpus.display());
    Ok(())
}

/// Writes each of `examples` (a name and its bytes) into `dir` behind the
/// selector byte that picks it: its place in the list.
fn selected(dir: &Path, examples: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (selector, (name, example)) in (0u8..).zip(examples) {
        let mut input = vec![selector];
        input.extend(example);
        fs::write(dir.join(format!("example-{name}")), input)?;
    }
    Ok(())
}
