//! The `plug-async-std` binary.

fn main() {
    plug_async_std::main()
}
