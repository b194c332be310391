//! Model sources and bad input: a saved `model.onnx` (HF layout, with and
//! without the `logits_from` input) loads and computes the same logits;
//! external data works; wrong or corrupt graphs, a missing or foreign
//! runtime library and bad options fail with errors that say what is wrong.

mod common;
use common::*;
use em_onnx::proto::ModelProto;
use engine_api::ErrorKind;
use engine_kit::Backend;
use prost::Message;

fn err(dir: &std::path::Path, options: &str) -> engine_api::EngineError {
    match em_onnx::open(&spec(dir), options) {
        Ok(_) => panic!("loading {} with {options} should fail", dir.display()),
        Err(e) => e,
    }
}

fn score_of(b: &mut dyn Backend) -> Vec<f32> {
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % 1000).collect();
    b.score(&tokens).expect("score").data.to_vec()
}

fn prefill_decode(b: &mut dyn Backend) -> Vec<f32> {
    let p: Vec<u32> = (3..20).collect();
    let mut l = Vec::new();
    b.prefill(&[(9, &p)], &mut l).unwrap();
    let mut out = l.clone();
    b.decode(&[(9, argmax(&l))], &mut l).unwrap();
    out.extend_from_slice(&l);
    b.free(9);
    out
}

#[test]
fn saved_model_onnx_loads_like_the_built_graph() {
    let src = synthetic("tiny");
    let t = model_copy(&src, "saved", false);
    let saved = t.path().join("model.onnx");
    let mut built = onnx(
        &src,
        &format!(r#"{{"threads":1,"save_model":"{}"}}"#, saved.display()),
    );
    assert!(saved.is_file() && t.path().join("model.onnx.data").is_file());
    // the folder has config.json and model.onnx only: the file is used
    let mut loaded = onnx(t.path(), r#"{"threads":1}"#);
    assert_eq!(score_of(&mut built), score_of(&mut loaded));
    assert_eq!(prefill_decode(&mut built), prefill_decode(&mut loaded));
}

/// An export without the `logits_from` extension (what optimum writes)
/// still loads; prefill then computes every position's logits.
#[test]
fn hf_layout_without_logits_from_loads() {
    let src = synthetic("tiny");
    let t = model_copy(&src, "hf", false);
    let saved = t.path().join("model.onnx");
    let mut built = onnx(
        &src,
        &format!(r#"{{"threads":1,"save_model":"{}"}}"#, saved.display()),
    );
    let mut m = ModelProto::decode(std::fs::read(&saved).unwrap().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.input.retain(|i| i.name() != "logits_from");
    std::fs::write(&saved, m.encode_to_vec()).unwrap();
    let mut loaded = onnx(t.path(), r#"{"threads":1}"#);
    let (a, b) = (prefill_decode(&mut built), prefill_decode(&mut loaded));
    assert!(max_abs_diff(&a, &b) <= 1e-5);
}

#[test]
fn cached_graph_with_external_data_gives_the_same_logits() {
    let src = synthetic("tiny");
    let mut inline = onnx(&src, r#"{"threads":1,"graph_cache":false}"#);
    let mut cached = onnx(&src, r#"{"threads":1}"#);
    assert_eq!(score_of(&mut inline), score_of(&mut cached));
}

#[test]
fn model_file_option_names_the_graph() {
    let src = synthetic("tiny");
    let t = model_copy(&src, "opt", false);
    let file = t.path().join("other.onnx");
    onnx(
        &src,
        &format!(r#"{{"threads":1,"save_model":"{}"}}"#, file.display()),
    );
    onnx(t.path(), r#"{"threads":1,"model_file":"other.onnx"}"#);
    let e = err(t.path(), r#"{"model_file":"missing.onnx"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(
        e.message.contains("missing.onnx") && e.message.contains("no such file"),
        "{e}"
    );
}

#[test]
fn corrupt_model_onnx_is_a_clear_error() {
    let src = synthetic("tiny");
    let t = model_copy(&src, "corrupt", true);
    std::fs::write(
        t.path().join("model.onnx"),
        b"this is not a protobuf \xff\xfe",
    )
    .unwrap();
    let e = err(t.path(), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(
        e.message.contains("model.onnx") && e.message.contains("cannot load"),
        "{e}"
    );
}

/// A valid ONNX model that is not GPT-2 in HF's layout names what is
/// missing.
#[test]
fn wrong_graph_names_the_missing_inputs() {
    use em_onnx::graph::{value_info, Dim, IR_VERSION, OPSET};
    use em_onnx::proto::{tensor_proto::DataType, GraphProto, NodeProto, OperatorSetIdProto};
    let src = synthetic("tiny");
    let t = model_copy(&src, "wrong", true);
    let x = || value_info("x", DataType::Float, &[Dim::Named("n")]);
    let mut y = x();
    y.name = Some("y".into());
    let m = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                op_type: Some("Identity".into()),
                ..Default::default()
            }],
            name: Some("identity".into()),
            input: vec![x()],
            output: vec![y],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(t.path().join("model.onnx"), m.encode_to_vec()).unwrap();
    let e = err(t.path(), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    for want in [
        "model.onnx",
        "missing input_ids",
        "past_key_values.0.key",
        "present.1.value",
    ] {
        assert!(e.message.contains(want), "{want:?} not in {e}");
    }
}

#[test]
fn missing_weights_name_the_file() {
    let src = synthetic("tiny");
    let t = model_copy(&src, "noweights", false);
    let e = err(t.path(), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("model.safetensors"), "{e}");
}

#[test]
fn missing_or_foreign_library_says_how_to_provision() {
    let src = synthetic("tiny");
    let e = err(
        &src,
        r#"{"library":"/nonexistent/libonnxruntime.so.1.31.1"}"#,
    );
    assert!(
        e.message.contains("/nonexistent/libonnxruntime.so.1.31.1")
            && e.message.contains("scripts/provision"),
        "{e}"
    );
    // a real shared library that is not ONNX Runtime
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file());
    if let Some(libc) = libc {
        let e = err(&src, &format!(r#"{{"library":"{libc}"}}"#));
        assert!(
            e.message.contains("OrtGetApiBase") && e.message.contains("scripts/provision"),
            "{e}"
        );
    }
}

#[test]
fn bad_options_and_unsupported_specs() {
    let src = synthetic("tiny");
    let e = err(&src, r#"{"threads":1,"speed":"max"}"#);
    assert!(e.message.contains("speed"), "{e}");
    let e = err(&src, r#"{"optimization":"turbo"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = err(&src, r#"{"execution_providers":["tpu"]}"#);
    assert!(e.message.contains("tpu"), "{e}");
    let e = err(&src, r#"{"threads":0}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let mut s = spec(&src);
    s.quantization = "q4_0".into();
    let e = em_onnx::open(&s, "{}").unwrap_err();
    assert!(e.is_unsupported() && e.message.contains("int4"), "{e}");
    s.quantization = "int4".into();
    let e = err_spec(&s, r#"{"nbits_accuracy":5}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("nbits_accuracy"), "{e}");
    let e = err_spec(&s, r#"{"int8_kernel":"fast"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("int8_kernel"), "{e}");
}

/// f16 and bf16 are `unsupported` for both families, quantized or not,
/// with what ONNX Runtime's CPU provider lacks as the reason (measured:
/// the crate's `cpu_provider_has_no_f16_or_bf16_matmul` pins it), and the
/// engine lists f32 only, so the host's preflight says so too.
#[test]
fn f16_and_bf16_are_unsupported_with_what_onnx_runtime_lacks() {
    use engine_api::Engine as _;
    let info = em_onnx::OnnxEngine.info();
    let dtypes: Vec<&str> = info.dtypes.iter().map(|d| d.as_str()).collect();
    assert_eq!(dtypes, ["f32"]);
    for (config, arch) in [("tiny", "gpt2"), ("tiny-llama", "llama")] {
        let src = synthetic(config);
        let mut s = spec(&src);
        s.architecture = arch.into();
        for (dtype, want) in [
            (
                "f16",
                &[
                    "ONNX Runtime 1.31.1",
                    "no float16 MatMul",
                    "x86-64",
                    "f32 weights",
                ][..],
            ),
            (
                "bf16",
                &[
                    "ONNX Runtime 1.31.1",
                    "no bfloat16 kernel for MatMul",
                    "Could not find an implementation for MatMul(13) node",
                ][..],
            ),
        ] {
            for q in ["none", "int4"] {
                s.dtype = dtype.into();
                s.quantization = q.into();
                let e = err_spec(&s, r#"{"threads":1}"#);
                assert!(e.is_unsupported(), "{config} {dtype} {q}: {e}");
                for w in want {
                    assert!(
                        e.message.contains(w),
                        "{config} {dtype} {q}: {w:?} not in {e}"
                    );
                }
            }
        }
    }
}

fn err_spec(s: &engine_api::ModelSpec, options: &str) -> engine_api::EngineError {
    match em_onnx::open(s, options) {
        Ok(_) => panic!("{options} was accepted"),
        Err(e) => e,
    }
}

/// The PyPI wheel is CPU-only: asking for CUDA is `unsupported` with the
/// reason, never a silent fallback to the CPU.
#[test]
fn cuda_without_a_gpu_build_is_unsupported() {
    let src = synthetic("tiny");
    match em_onnx::open(&spec(&src), r#"{"execution_providers":["cuda"]}"#) {
        Err(e) => {
            assert!(e.is_unsupported(), "{e}");
            assert!(
                e.message.contains("cuda") || e.message.contains("CUDA"),
                "{e}"
            );
        }
        // an onnxruntime-gpu library on a machine with a GPU
        Ok(_) => eprintln!("CUDA execution provider available: nothing to check"),
    }
}

/// GPT-2 and a Llama config build as int8 and int4 graphs: each loads,
/// says how its projections run, holds fewer weight bytes than f32 and
/// scores close to the f32 graph (the quantized logits differ, but not by
/// more than the f32 logits' own spread); a given `.onnx` file is not
/// quantized (`unsupported`, naming it).
#[test]
fn quantized_graphs_build_for_gpt2_and_llama() {
    use engine_kit::Kernels as _;
    for (config, arch) in [("tiny", "gpt2"), ("tiny-llama", "llama")] {
        let src = synthetic(config);
        let mut s = spec(&src);
        s.architecture = arch.into();
        let mut f32b = em_onnx::open(&s, r#"{"threads":1,"graph_cache":false}"#).unwrap();
        let want = score_of(&mut f32b);
        let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let f32_bytes = f32b.kernels().weight_bytes();
        for (q, kernel) in [("int8", "8-bit"), ("int4", "4-bit")] {
            s.quantization = q.into();
            let mut b = em_onnx::open(&s, r#"{"threads":1,"graph_cache":false}"#)
                .unwrap_or_else(|e| panic!("{config} {q}: {e}"));
            let d = b.kernels().describe();
            assert!(
                d.contains(kernel) && d.contains("streamed_weight_bytes"),
                "{d}"
            );
            assert!(b.kernels().weight_bytes() < f32_bytes, "{config} {q}");
            let got = score_of(&mut b);
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            assert!(
                err < spread,
                "{config} {q}: max |Δlogit| {err}, logits within ±{spread}"
            );
        }
    }
    let src = synthetic("tiny");
    let t = model_copy(&src, "quant-saved", false);
    let saved = t.path().join("model.onnx");
    onnx(
        &src,
        &format!(r#"{{"threads":1,"save_model":"{}"}}"#, saved.display()),
    );
    let mut s = spec(t.path());
    s.quantization = "int4".into();
    let e = err_spec(&s, r#"{"threads":1}"#);
    assert!(
        e.is_unsupported() && e.message.contains("model.onnx"),
        "{e}"
    );
}
