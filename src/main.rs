//! The `plug` binary: plug on the runtime chosen by Cargo feature, std threads by
//! default. An async runtime feature wins over the default, so
//! `--features smol` works with or without `--no-default-features`.

#[cfg(feature = "smol")]
fn main() {
    plug_smol::main()
}

#[cfg(all(feature = "async-std", not(feature = "smol")))]
fn main() {
    plug_async_std::main()
}

#[cfg(all(feature = "std", not(feature = "smol"), not(feature = "async-std")))]
fn main() {
    plug_std::main()
}

#[cfg(not(any(feature = "std", feature = "smol", feature = "async-std")))]
compile_error!("choose a runtime: the `std` (default), `smol` or `async-std` feature");
