//! `console`: the web console. Wiring only: see the library.

service_kit::global_allocator!();

fn main() -> anyhow::Result<()> {
    service_kit::main::<console::Application>()
}
