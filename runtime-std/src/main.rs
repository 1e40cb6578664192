//! The `plug-std` binary.

fn main() {
    plug_std::main()
}
