//! The `plug-smol` binary.

fn main() {
    plug_smol::main()
}
