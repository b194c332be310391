//! Arbitrary bytes, as UTF-8 (lossy), into `Matrix::parse`. The property:
//! parsing returns `Ok` or `Err` (never panics, hangs or allocates without
//! bound: libFuzzer's `-timeout` and `-rss_limit_mb` catch those), and what
//! it returns keeps the parser's promises.
#![no_main]

use engine_matrix_format::{Matrix, MatrixError};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Matrix::parse(&text, Path::new("fuzz/matrix.yaml")) {
        Ok(m) => check(&m),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz/matrix.yaml"), "{msg}");
            if let MatrixError::At { line, column, .. } = e {
                assert!(line >= 1 && column >= 1, "{msg}");
            }
        }
    }
});

fn check(m: &Matrix) {
    assert!(!m.models.is_empty() && !m.engines.is_empty() && !m.scenarios.is_empty());
    for quick in [false, true] {
        let cells = m.cells(quick);
        assert!(!cells.is_empty());
        let mut ids = HashSet::new();
        for c in &cells {
            assert!(ids.insert(c.id.as_str()), "duplicate cell id {}", c.id);
            assert!(m.model(&c.model).is_some(), "{}", c.id);
            assert!(m.engine(&c.engine).is_some(), "{}", c.id);
            assert!(c
                .id
                .starts_with(&format!("{}/{}/{}/", c.scenario, c.model, c.engine)));
        }
    }
    let mut fields = vec![
        String::new(),
        "name".into(),
        "baseline".into(),
        "models".into(),
        "scenarios[0].axes.batch_size[0]".into(),
        "no.such[12].field".into(),
        "[".into(),
        "]".into(),
        ".".into(),
        "a[".into(),
    ];
    for (i, e) in m.engines.iter().enumerate() {
        assert_eq!(m.engine_index(&e.name), Some(i));
        fields.push(format!("engines[{i}].options"));
    }
    for (i, mo) in m.models.iter().enumerate() {
        assert_eq!(m.model_index(&mo.name), Some(i));
        fields.push(format!("models[{i}].path"));
    }
    for i in 0..m.scenarios.len() {
        fields.push(format!("scenarios[{i}].quick.axes"));
    }
    for f in &fields {
        let at = m.locate(f);
        assert!(at.starts_with("fuzz/matrix.yaml"), "{at}");
    }
}
