//! The `plug` binary: plug on the runtime chosen by Cargo feature (std threads by
//! default).

#[cfg(feature = "std")]
fn main() {
    plug_std::main()
}

#[cfg(not(feature = "std"))]
compile_error!("choose a runtime: the `std` feature (default)");
