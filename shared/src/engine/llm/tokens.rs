//! Input tokens a prompt will take, counted before the call for the budget reservation.
//!
//! OpenAI models: exact, with OpenAI's own BPE encodings (o200k_base for the GPT-4o, 4.1, 5 and
//! o-series families, cl100k_base for GPT-4 and 3.5), plus the chat framing OpenAI documents
//! (3 tokens per message and 3 to prime the answer). Each encoding is loaded once per process,
//! on first use.
//!
//! Anthropic and Bedrock models ship no public tokenizer: a stated upper-bound heuristic, one
//! token per 3 bytes (real tokenizers average about 4 for English) plus 16 tokens of framing.

use std::sync::OnceLock;

use tiktoken_rs::{CoreBPE, Rank};

use super::Prompt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Counted with the model's own tokenizer.
    Exact,
    /// The byte heuristic.
    Estimated,
}

fn encoding(model: &str) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    let o200k = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
    ];
    if o200k.iter().any(|p| model.starts_with(p)) {
        return O200K.get_or_init(o200k_base).as_ref();
    }
    if ["gpt-4", "gpt-3.5"].iter().any(|p| model.starts_with(p)) {
        return CL100K.get_or_init(cl100k_base).as_ref();
    }
    None
}

/// Packed by build.rs from tiktoken-rs's own tables.
static O200K_BASE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bpe"));
static CL100K_BASE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bpe"));

/// cl100k_base's split pattern, as OpenAI publishes it (tiktoken-rs keeps it private).
const CL100K_BASE_PAT_STR: &str = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

fn o200k_base() -> Option<CoreBPE> {
    use tiktoken_rs::{ENDOFPROMPT, ENDOFTEXT};
    let special = [(ENDOFTEXT, 199_999), (ENDOFPROMPT, 200_018)];
    unpack(O200K_BASE, &special, tiktoken_rs::O200K_BASE_PAT_STR)
}

fn cl100k_base() -> Option<CoreBPE> {
    use tiktoken_rs::{ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX};
    let special = [
        (ENDOFTEXT, 100_257),
        (FIM_PREFIX, 100_258),
        (FIM_MIDDLE, 100_259),
        (FIM_SUFFIX, 100_260),
        (ENDOFPROMPT, 100_276),
    ];
    unpack(CL100K_BASE, &special, CL100K_BASE_PAT_STR)
}

/// An encoding from its packed tokens (rank order, each prefixed with its length).
fn unpack(packed: &[u8], special: &[(&str, Rank)], pattern: &str) -> Option<CoreBPE> {
    let raw = miniz_oxide::inflate::decompress_to_vec(packed).ok()?;
    let mut tokens = Vec::with_capacity(raw.len() / 8);
    let mut rest = raw.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let (token, tail) = tail.split_at_checked(usize::from(len))?;
        tokens.push(token);
        rest = tail;
    }
    CoreBPE::new(
        tokens
            .into_iter()
            .zip(0..)
            .map(|(token, rank)| (token.to_vec(), rank))
            .collect(),
        special.iter().map(|(s, r)| ((*s).to_owned(), *r)).collect(),
        pattern,
    )
    .ok()
}

/// Input tokens of `prompt` for `provider`, and how they were counted.
pub fn input_tokens(provider: &str, prompt: &Prompt) -> (u64, Counting) {
    if provider == "openai" {
        if let Some(bpe) = encoding(&prompt.model) {
            let messages = [prompt.system.as_deref(), Some(prompt.prompt.as_str())];
            let mut total = 3;
            for text in messages.into_iter().flatten() {
                total += 3 + bpe.encode_ordinary(text).len() as u64;
            }
            return (total, Counting::Exact);
        }
    }
    let bytes = prompt.prompt.len() + prompt.system.as_deref().map_or(0, str::len);
    ((bytes as u64).div_ceil(3) + 16, Counting::Estimated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(model: &str, system: Option<&str>, text: &str) -> Prompt {
        Prompt {
            model: model.into(),
            system: system.map(str::to_owned),
            prompt: text.into(),
            temperature: None,
            max_tokens: 10,
            json: false,
        }
    }

    #[test]
    fn openai_models_are_counted_with_their_encoding() {
        // "hello world" is two tokens in both encodings; framing adds 3 + 3.
        let (n, how) = input_tokens("openai", &prompt("gpt-4o-mini", None, "hello world"));
        assert_eq!((n, how), (8, Counting::Exact));
        let (n, how) = input_tokens(
            "openai",
            &prompt("gpt-4-turbo", Some("Be brief."), "hello world"),
        );
        // "Be brief." is three tokens in cl100k_base.
        assert_eq!((n, how), (3 + 3 + 3 + 3 + 2, Counting::Exact));
    }

    #[test]
    fn the_packed_encodings_count_as_tiktoken_does() {
        let texts = [
            "hello world",
            "Ünïcödé, emoji 🦀🦀 and CJK 漢字かな交じり文 with   spaces\n\n\ttabs",
            "def f(x):\n    return x ** 2  # comment\n",
            "<|endoftext|> is only text here; 1234567890 numbers, URLs https://a.example/b?c=d",
        ];
        for (ours, theirs) in [
            (o200k_base().unwrap(), tiktoken_rs::o200k_base().unwrap()),
            (cl100k_base().unwrap(), tiktoken_rs::cl100k_base().unwrap()),
        ] {
            for text in texts {
                assert_eq!(
                    ours.encode_ordinary(text),
                    theirs.encode_ordinary(text),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn other_models_use_the_stated_heuristic() {
        let (n, how) = input_tokens(
            "anthropic",
            &prompt("claude-3-5-haiku-20241022", None, "hello"),
        );
        assert_eq!((n, how), (18, Counting::Estimated));
        let (n, how) = input_tokens("openai", &prompt("my-finetune", None, "hello"));
        assert_eq!((n, how), (18, Counting::Estimated));
    }
}
