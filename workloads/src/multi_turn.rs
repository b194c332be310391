//! ShareGPT conversations replayed turn by turn (`dataset: multi_turn`):
//! a session is one conversation; its turn `k` is a request whose prompt
//! is the chat history up to the user's `k`-th message (the chat template
//! applied, the assistant's turn opened), and whose output length is the
//! assistant's `k`-th answer in tokens (unless the matrix fixes
//! `output_tokens`).
//!
//! The history holds the conversation's own answers, not the engine's:
//! every engine then gets the very same prompts, turn for turn, which a
//! comparison needs (an engine's own answers would differ between engines
//! and make the later turns different workloads). What the history costs
//! a server (its growing prompt, and what a prefix cache saves of it) is
//! the same either way.
//!
//! Sessions are drawn in the same seeded order as [`crate::sharegpt`]'s
//! samples; a session ends at `max_turns`, at the conversation's last
//! answer, or before a turn whose prompt and output would not fit the
//! model's context. Sessions of fewer than two turns are passed over (a
//! one-turn session is the `sharegpt` workload).

use crate::sharegpt::{Conversations, Turn};
use crate::{Sample, WorkloadError, WorkloadRecord};

/// Renders a chat history (user and assistant turns, the last a user's)
/// into the model's prompt ids, and counts an answer's tokens.
pub trait Chat {
    fn prompt(&self, history: &[Turn]) -> Result<Vec<u32>, String>;
    fn answer_tokens(&self, text: &str) -> Result<usize, String>;
}

/// What to draw.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    /// Sessions to build (fewer when the file has fewer usable).
    pub sessions: usize,
    pub max_turns: usize,
    pub seed: u64,
    pub fixed_output: Option<u32>,
    pub context: usize,
}

/// The sessions, each its turns' samples in order.
pub fn sessions(
    c: &Conversations,
    chat: &dyn Chat,
    d: Draw,
) -> Result<(Vec<Vec<Sample>>, WorkloadRecord), WorkloadError> {
    let mut order: Vec<usize> = (0..c.dialogs.len()).collect();
    crate::sharegpt::shuffle(&mut order, d.seed);
    let (mut out, mut skipped) = (Vec::new(), 0usize);
    let fail = |i: usize, m: String| WorkloadError::File {
        file: c.file.clone(),
        message: format!("conversation {i}: {m}"),
    };
    for &i in &order {
        if out.len() >= d.sessions {
            break;
        }
        let dialog = &c.dialogs[i];
        let mut turns = Vec::new();
        for k in (0..dialog.len()).step_by(2) {
            if turns.len() >= d.max_turns {
                break;
            }
            let output = match (d.fixed_output, dialog.get(k + 1)) {
                (Some(n), _) => n as usize,
                (None, Some(answer)) => chat
                    .answer_tokens(&answer.text)
                    .map_err(|e| fail(i, format!("cannot tokenize answer {}: {e}", k / 2)))?,
                (None, None) => break,
            };
            if output == 0 {
                break;
            }
            let prompt = chat
                .prompt(&dialog[..=k])
                .map_err(|e| fail(i, format!("cannot render turn {}: {e}", k / 2)))?;
            if prompt.len() + output > d.context {
                break;
            }
            turns.push(Sample {
                prompt,
                output_tokens: output as u32,
            });
        }
        if turns.len() < 2 {
            skipped += 1;
            continue;
        }
        out.push(turns);
    }
    if out.is_empty() {
        return Err(WorkloadError::File {
            file: c.file.clone(),
            message: format!(
                "no conversation gives a session of two turns or more within the model's context of {} ({} dialogs, {skipped} passed over)",
                d.context,
                c.dialogs.len()
            ),
        });
    }
    let record = WorkloadRecord {
        dataset: "multi_turn".into(),
        file: Some(c.file.clone()),
        entries: Some(c.entries),
        pool: Some(out.iter().map(Vec::len).sum()),
        skipped: Some(skipped),
        truncated: c.truncation_note(),
    };
    Ok((out, record))
}

/// A history as a plain transcript, for models without a chat template
/// (`User: ...` / `Assistant: ...` lines, ending with `Assistant:`).
pub fn transcript(history: &[Turn]) -> String {
    let mut s = String::new();
    for t in history {
        s.push_str(if t.user { "User: " } else { "Assistant: " });
        s.push_str(&t.text);
        s.push('\n');
    }
    s.push_str("Assistant:");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One id per word; the prompt is the transcript's words.
    struct Words;
    impl Chat for Words {
        fn prompt(&self, history: &[Turn]) -> Result<Vec<u32>, String> {
            Ok(transcript(history).split_whitespace().map(|_| 1).collect())
        }
        fn answer_tokens(&self, text: &str) -> Result<usize, String> {
            Ok(text.split_whitespace().count())
        }
    }

    fn text(n: usize) -> String {
        vec!["w"; n].join(" ")
    }

    fn dialog(lens: &[usize]) -> Vec<Turn> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| Turn {
                user: i % 2 == 0,
                text: text(n),
            })
            .collect()
    }

    fn convs(dialogs: Vec<Vec<Turn>>) -> Conversations {
        Conversations {
            file: "c.json".into(),
            pairs: vec![],
            entries: dialogs.len(),
            dialogs,
            truncated: None,
        }
    }

    fn draw() -> Draw {
        Draw {
            sessions: 10,
            max_turns: 8,
            seed: 0,
            fixed_output: None,
            context: 1000,
        }
    }

    #[test]
    fn each_turn_carries_the_history_before_it() {
        let c = convs(vec![dialog(&[3, 5, 4, 6, 2, 7])]);
        let (s, rec) = sessions(&c, &Words, draw()).unwrap();
        assert_eq!(s.len(), 1);
        // Transcript words: "User:" + user words (+ "Assistant:" + answer
        // words per earlier exchange) + the final "Assistant:".
        let lens: Vec<(usize, u32)> = s[0]
            .iter()
            .map(|t| (t.prompt.len(), t.output_tokens))
            .collect();
        assert_eq!(
            lens,
            [
                (1 + 3 + 1, 5),
                (1 + 3 + 1 + 5 + 1 + 4 + 1, 6),
                (1 + 3 + 1 + 5 + 1 + 4 + 1 + 6 + 1 + 2 + 1, 7)
            ]
        );
        // The prompts grow: turn k's starts with turn k-1's history.
        assert!(s[0]
            .windows(2)
            .all(|w| w[0].prompt.len() < w[1].prompt.len()));
        assert_eq!((rec.dataset.as_str(), rec.pool), ("multi_turn", Some(3)));
    }

    #[test]
    fn sessions_end_at_max_turns_the_context_or_the_last_answer() {
        let c = convs(vec![
            dialog(&[3, 5, 4, 6, 2, 7, 1, 1]),
            // A trailing user turn without an answer ends the session
            // (unless the output is fixed).
            dialog(&[3, 5, 4]),
            // One exchange only: passed over.
            dialog(&[3, 5]),
        ]);
        let mut d = draw();
        d.max_turns = 2;
        let (s, rec) = sessions(&c, &Words, d).unwrap();
        let mut turns: Vec<usize> = s.iter().map(Vec::len).collect();
        turns.sort();
        assert_eq!(
            turns,
            [2],
            "the 3-exchange one cut at 2; the others too short"
        );
        assert_eq!(rec.skipped, Some(2));
        d.fixed_output = Some(4);
        let (s, _) = sessions(&c, &Words, d).unwrap();
        assert_eq!(s.len(), 2, "a fixed output answers the trailing user turn");
        assert!(s.iter().flatten().all(|t| t.output_tokens == 4));
        // A context that holds two turns of the first dialog and no more.
        let mut d = draw();
        d.context = 1 + 3 + 1 + 5 + 1 + 4 + 1 + 6;
        let (s, _) = sessions(&convs(vec![dialog(&[3, 5, 4, 6, 2, 7])]), &Words, d).unwrap();
        assert_eq!(s[0].len(), 2);
        d.context = 10;
        let e = sessions(&convs(vec![dialog(&[3, 5, 4, 6])]), &Words, d).unwrap_err();
        assert!(
            e.to_string()
                .contains("no conversation gives a session of two turns"),
            "{e}"
        );
    }

    #[test]
    fn the_transcript_marks_speakers_and_opens_the_answer() {
        assert_eq!(
            transcript(&[
                Turn {
                    user: true,
                    text: "hi".into()
                },
                Turn {
                    user: false,
                    text: "hello".into()
                },
                Turn {
                    user: true,
                    text: "bye".into()
                }
            ]),
            "User: hi\nAssistant: hello\nUser: bye\nAssistant:"
        );
    }
}
