//! The `plug` binary: plug on the runtime chosen by Cargo feature, std by
//! default (the README's benchmark table says why). A runtime feature named
//! explicitly wins over the default, so `--features smol` works with or without
//! `--no-default-features`.

#[cfg(feature = "async-std")]
fn main() {
    plug_async_std::main()
}

#[cfg(all(feature = "smol", not(feature = "async-std")))]
fn main() {
    plug_smol::main()
}

#[cfg(all(feature = "std", not(feature = "smol"), not(feature = "async-std")))]
fn main() {
    plug_std::main()
}

#[cfg(not(any(feature = "std", feature = "smol", feature = "async-std")))]
compile_error!("choose a runtime: the `std` (default), `smol` or `async-std` feature");
