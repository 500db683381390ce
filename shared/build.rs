//! Packs OpenAI's BPE encodings (from tiktoken-rs, a build dependency) for the worker's exact
//! prompt token counts: each token's bytes in rank order, length-prefixed and deflated. The text
//! form tiktoken-rs embeds is base64 plus a decimal rank per line: 5.3 MB in every binary that
//! counts tokens; packed, both encodings take 1.5 MB (docs/PERFORMANCE.md, artifact size).
//!
//! Also writes the roots AWS endpoints chain to (Amazon Trust Services), taken from the Mozilla
//! set in webpki-root-certs, as the PEM document the SDK's trust store reads (shared::tls).

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    aws_roots(&out);
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

/// The Amazon Trust Services roots: Amazon Root CA 1-4 and Starfield Services Root Certificate
/// Authority - G2 (which cross-signs Amazon Root CA 1 for older chains).
fn aws_roots(out: &std::path::Path) {
    use base64::Engine as _;
    const NAMES: [&str; 5] = [
        "Amazon Root CA 1",
        "Amazon Root CA 2",
        "Amazon Root CA 3",
        "Amazon Root CA 4",
        "Starfield Services Root Certificate Authority - G2",
    ];
    let mut pem = String::new();
    for name in NAMES {
        // A self-signed root names itself as subject and issuer; no other root holds these names.
        let found: Vec<_> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|c| c.windows(name.len()).any(|w| w == name.as_bytes()))
            .collect();
        assert_eq!(found.len(), 1, "{name}: expected exactly one root");
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(found[0].as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    std::fs::write(out.join("aws_roots.pem"), pem).expect("OUT_DIR is writable");
}
