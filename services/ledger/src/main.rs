//! `ledger`: service D. Wiring only: see the library.

service_kit::global_allocator!();

fn main() -> anyhow::Result<()> {
    service_kit::main::<ledger::Application>()
}
