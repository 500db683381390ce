//! Packs OpenAI's BPE encodings (from tiktoken-rs, a build dependency) for the worker's exact
//! prompt token counts: each token's bytes in rank order, length-prefixed and deflated. The text
//! form tiktoken-rs embeds is base64 plus a decimal rank per line: 5.3 MB in every binary that
//! counts tokens; packed, both encodings take 1.5 MB (docs/PERFORMANCE.md, artifact size).

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let encodings = [
        ("o200k_base", tiktoken_rs::o200k_base(), 199_998),
        ("cl100k_base", tiktoken_rs::cl100k_base(), 100_256),
    ];
    for (name, bpe, tokens) in encodings {
        let bpe = bpe.expect("tiktoken-rs builds its own encoding");
        let mut packed = Vec::with_capacity(tokens * 9);
        // Ranks are dense from 0; the first rank with no token (special tokens aside) ends it.
        let mut rank = 0u32;
        while let Ok(bytes) = bpe.decode_bytes(&[rank]) {
            if rank as usize == tokens {
                break;
            }
            let len = u8::try_from(bytes.len()).expect("a BPE token is at most 255 bytes");
            packed.push(len);
            packed.extend_from_slice(&bytes);
            rank += 1;
        }
        assert_eq!(rank as usize, tokens, "{name}: the encoding changed size");
        let deflated = miniz_oxide::deflate::compress_to_vec(&packed, 10);
        std::fs::write(out.join(format!("{name}.bpe")), deflated).expect("OUT_DIR is writable");
    }
}
