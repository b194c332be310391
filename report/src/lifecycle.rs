//! The report's energy and GPU table (one shape for Markdown and HTML):
//! per cell and repetition that has either, the joules its counters read,
//! joules per output token (all of it, and above the run's idle draw) and
//! what NVML sampled: the fullest device's peak memory, board power
//! summed over the devices, the hottest reading and the mean SM clock.
//! Cells shorter than [`engine_matrix_results::telemetry::MIN_WINDOW_S`] show their
//! joules but no derived figure, with a footnote saying why. A last row
//! totals the run's long enough cells: joules and seconds summed, joules
//! per output token over all of them (above idle only when every one has
//! that figure).

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_results::telemetry::MIN_WINDOW_S;

const HEADERS: [&str; 12] = [
    "cell",
    "repeat",
    "seconds",
    "energy J",
    "mean W",
    "J/token",
    "J/token above idle",
    "energy source",
    "GPU peak MiB",
    "GPU W",
    "GPU max °C",
    "SM MHz",
];

/// The ok runs whose leak check drew a verdict, as (cell id, repeat,
/// check), and how many ok runs had none (too short: see
/// [`engine_matrix_results::telemetry::settled_check`]).
pub(crate) fn leak_rows<'a>(
    groups: &'a [Group<'a>],
) -> (
    Vec<(&'a str, u32, &'a engine_matrix_results::LeakCheck)>,
    usize,
) {
    let mut rows = Vec::new();
    let mut short = 0;
    for g in groups {
        for r in g.ok_runs() {
            match r.memory.as_ref().and_then(|m| m.leak.as_ref()) {
                Some(l) if l.verdict != engine_matrix_results::LeakVerdict::Insufficient => {
                    rows.push((g.cell().id.as_str(), r.repeat, l))
                }
                _ => short += 1,
            }
        }
    }
    (rows, short)
}

/// What the lifecycle section says when no cell was long enough for a
/// leak verdict, or under the table when some were not.
pub(crate) fn leak_note(any: bool, short: usize) -> String {
    use engine_matrix_results::telemetry::{ACCEPTABLE_MB_PER_HOUR, MIN_ITERATIONS};
    let needs = format!(
        "A verdict needs {MIN_ITERATIONS} measured iterations after warm-up, or, for a sustained closed loop or a serving cell whose server the harness launched (its server's memory is read), {MIN_ITERATIONS} completed requests; the `stress` preset runs such cells."
    );
    let target = format!("Target 0 MB/h; under {ACCEPTABLE_MB_PER_HOUR:.0} MB/h is acceptable.");
    if !any && short == 0 {
        // No LLM cell ran (a retrieval run): nothing to judge.
        "No leak verdict: no LLM cell ran (retrieval cells are not checked for leaks).".into()
    } else if any && short == 0 {
        target
    } else if any {
        format!("{target} {short} cells were too short for a leak verdict. {needs}")
    } else {
        format!("No leak verdict: all {short} cells were too short for one. {needs}")
    }
}

/// The table, and a footnote when some cell was too short for derived
/// energy figures; `None` when no cell has energy or GPU readings.
pub(crate) fn energy_gpu(groups: &[Group]) -> Option<(Table, Option<String>)> {
    let mut rows = Vec::new();
    let mut short = 0;
    // Totals over the cells with energy over a long enough window:
    // seconds, joules, output tokens, and joules above idle (`None` once a
    // cell lacks that figure).
    let (mut seconds, mut joules, mut tokens) = (0.0, 0.0, 0u64);
    let mut above = Some(0.0);
    let mut with_energy = 0;
    for g in groups {
        for r in g.ok_runs() {
            let Some(m) = r.memory.as_ref() else { continue };
            if m.energy.is_none() && m.gpu.is_none() {
                continue;
            }
            let e = m.energy.as_ref();
            let gpu = m.gpu.as_ref();
            let is_short = e.is_some_and(|e| e.note.is_some());
            short += usize::from(is_short);
            let mark = if is_short { " †" } else { "" };
            if let Some(e) = e.filter(|_| !is_short) {
                with_energy += 1;
                seconds += e.seconds;
                joules += e.joules;
                tokens += r.metrics.as_ref().map_or(0, |m| m.total_output_tokens);
                above = above.zip(e.joules_above_idle).map(|(a, b)| a + b);
            }
            rows.push(vec![
                g.cell().id.clone(),
                r.repeat.to_string(),
                format!("{}{mark}", f(e.map(|e| e.seconds), 3)),
                f(e.map(|e| e.joules), 2),
                f(e.and_then(|e| e.mean_watts), 1),
                f(e.and_then(|e| e.joules_per_output_token), 4),
                f(e.and_then(|e| e.joules_above_idle_per_output_token), 4),
                e.map_or_else(|| "—".into(), |e| e.source.clone()),
                f(
                    gpu.and_then(|g| g.peak_memory_used_bytes)
                        .map(|b| b as f64 / (1u64 << 20) as f64),
                    0,
                ),
                f(gpu.and_then(|g| g.mean_power_w), 1),
                gpu.and_then(|g| g.max_temperature_c)
                    .map_or_else(|| "—".into(), |t| t.to_string()),
                f(gpu.and_then(|g| g.mean_sm_clock_mhz), 0),
            ]);
        }
    }
    if rows.is_empty() {
        return None;
    }
    if with_energy > 1 {
        let per_token = |j: f64| (tokens > 0).then(|| j / tokens as f64);
        let mut total = vec![
            format!("total: {with_energy} cells of {} s or more", MIN_WINDOW_S),
            String::new(),
            f(Some(seconds), 3),
            f(Some(joules), 2),
            f((seconds > 0.0).then(|| joules / seconds), 1),
            f(per_token(joules), 4),
            f(above.and_then(per_token), 4),
        ];
        total.resize(HEADERS.len(), String::new());
        rows.push(total);
    }
    let note = (short > 0).then(|| {
        format!(
            "† {short} cells ran under {} s: their counters' joules are shown, but no watts or joules per token (counters advance in steps; see summary.json's energy.note).",
            MIN_WINDOW_S
        )
    });
    Some((
        Table {
            headers: HEADERS.to_vec(),
            rows,
        },
        note,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis;
    use crate::fixtures::{cell, metrics, ok, summary};
    use engine_matrix_results::telemetry::energy_record;
    use engine_matrix_results::{GpuRecord, MemoryRecord};

    /// A cell of four iterations of 10 output tokens, with `energy`
    /// (joules, seconds; idle 100 W) and `gpu`.
    fn run(
        engine: &str,
        energy: Option<(f64, f64)>,
        gpu: Option<GpuRecord>,
    ) -> engine_matrix_results::CellResult {
        let mut c = ok(
            cell(engine, 8, 10, 1),
            metrics(&[100.0; 4], &[5.0; 4], 10),
            0,
        );
        c.memory = Some(MemoryRecord {
            energy: energy.map(|(j, s)| energy_record("nvml", j, s, Some(100.0), 40)),
            gpu,
            ..MemoryRecord::default()
        });
        c
    }

    #[test]
    fn rows_per_cell_a_total_over_long_cells_and_a_footnote_for_short_ones() {
        let gpu = GpuRecord {
            samples: 10,
            devices: 2,
            peak_memory_used_bytes: Some(3 << 30),
            mean_power_w: Some(250.0),
            max_temperature_c: Some(61),
            mean_sm_clock_mhz: Some(1755.0),
            mean_mem_clock_mhz: None,
        };
        let s = summary(
            Some("a"),
            vec![
                run("a", Some((300.0, 2.0)), Some(gpu)),
                run("b", Some((500.0, 4.0)), None),
                // 3 ms: joules shown, nothing derived, left out of the total.
                run("c", Some((0.5, 0.003)), None),
                // Neither energy nor GPU: no row.
                run("d", None, None),
            ],
        );
        let groups = analysis::groups(&s);
        let (t, note) = energy_gpu(&groups).unwrap();
        assert_eq!(t.headers.len(), HEADERS.len());
        assert!(t.rows.iter().all(|r| r.len() == HEADERS.len()));
        assert_eq!(t.rows.len(), 4, "{:?}", t.rows);
        let a = &t.rows[0];
        // 300 J over 2 s: 150 W; 40 tokens: 7.5 J/token, (300 - 200) / 40
        // = 2.5 above the 100 W idle.
        assert_eq!(
            a[2..],
            [
                "2.000", "300.00", "150.0", "7.5000", "2.5000", "nvml", "3072", "250.0", "61",
                "1755"
            ]
        );
        assert_eq!(t.rows[1][8..], ["—", "—", "—", "—"]);
        let short = &t.rows[2];
        assert_eq!(short[2..7], ["0.003 †", "0.50", "—", "—", "—"]);
        // a and b: 800 J over 6 s and 80 tokens; above idle 100 + 100 J.
        let total = &t.rows[3];
        assert_eq!(total[0], "total: 2 cells of 1 s or more");
        assert_eq!(
            total[2..7],
            ["6.000", "800.00", "133.3", "10.0000", "2.5000"]
        );
        assert!(note.unwrap().starts_with("† 1 cells ran under 1 s"));

        let none = summary(Some("d"), vec![run("d", None, None)]);
        assert!(energy_gpu(&analysis::groups(&none)).is_none());
    }
}
