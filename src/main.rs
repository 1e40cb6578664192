//! The `plug` binary: plug on the runtime chosen by Cargo feature, smol by
//! default (the README's benchmark table says why). A runtime feature named
//! explicitly wins over the default, so `--features std` works with or without
//! `--no-default-features`.

#[cfg(feature = "std")]
fn main() {
    plug_std::main()
}

#[cfg(all(feature = "async-std", not(feature = "std")))]
fn main() {
    plug_async_std::main()
}

#[cfg(all(feature = "smol", not(feature = "std"), not(feature = "async-std")))]
fn main() {
    plug_smol::main()
}

#[cfg(not(any(feature = "std", feature = "smol", feature = "async-std")))]
compile_error!("choose a runtime: the `smol` (default), `std` or `async-std` feature");
