//! Links the plugin so that it finds libtorch without `LD_LIBRARY_PATH`:
//! torch-sys reports the library folder it linked against
//! (`DEP_TCH_LIBTORCH_LIB`, from its `links = "tch"`), and we record it as
//! the cdylib's rpath (tch's own rpath flags apply to tch's targets only).
//! Also pins the libtorch version: the PyPI wheel carries no version file,
//! so scripts/provision writes `build-version` after checking
//! `torch/version.py`; a missing or different one fails the build here.
//! And compiles `cpp/qlinear.cpp`, the shim that reaches fbgemm's dynamic
//! int8 linear (a custom op tch does not bind), with the flags torch-sys
//! uses for its own C++ (C++17, the wheel's C++11 ABI).

const TORCH_VERSION: &str = "2.13.0";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(l) => std::path::PathBuf::from(l),
        Err(_) => panic!("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)"),
    };
    let root = lib.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let version_file = root.join("build-version");
    println!("cargo:rerun-if-changed={}", version_file.display());
    let version = std::fs::read_to_string(&version_file)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/provision (it installs torch=={TORCH_VERSION} from PyPI and writes this file)",
                version_file.display()
            )
        });
    if version.split('+').next() != Some(TORCH_VERSION) {
        panic!(
            "{} says libtorch {version}; tch 0.26 needs {TORCH_VERSION}: run scripts/provision",
            version_file.display()
        );
    }
    println!("cargo:rustc-env=EM_TORCH_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=EM_TORCH_LIBTORCH_LIB={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    compile_shim(&root);
}

/// `cpp/qlinear.cpp` against the libtorch headers under `root/include`.
fn compile_shim(root: &std::path::Path) {
    println!("cargo:rerun-if-changed=cpp/qlinear.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("cpp/qlinear.cpp")
        .compile("em_qlinear");
}
