//! Property tests for every decoder of outside input: the store format, references and the
//! manifest. Whatever the bytes, the answer is a value or an error, never a panic; and what
//! the reference printer writes, the parser reads back unchanged.

use std::path::{Path, PathBuf};

use envrun::manifest::Manifest;
use envrun::reference::{self, Part, Reference, SecretRef};
use envrun::secret::Secret;
use envrun::store::{self, Contents, Key};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_e1e1),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn store_open_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let key = Key::from_base64(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "k").unwrap();
        prop_assert!(store::open(&data, &key, Path::new("s")).is_err());
    }

    #[test]
    fn store_open_rejects_any_change_to_a_sealed_store(
        value in "[ -~]{1,40}",
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let key = Key::generate().unwrap();
        let mut contents = Contents::default();
        contents.secrets.insert("K".into(), Secret::from_slice(value.as_bytes()));
        let mut sealed = store::seal(&contents, &key).unwrap();
        let i = at.index(sealed.len());
        sealed[i] ^= xor;
        prop_assert!(store::open(&sealed, &key, Path::new("s")).is_err());
        // Truncation anywhere is rejected too.
        prop_assert!(store::open(&sealed[..i], &key, Path::new("s")).is_err());
    }

    #[test]
    fn parse_value_never_panics(s in "\\PC{0,60}") {
        let _ = reference::parse_value(&s);
    }

    #[test]
    fn parse_value_never_panics_on_reference_like_text(s in "(secret|env|file|\\$\\{|\\$\\$|[@:#?&=}/a-z]){0,20}") {
        let _ = reference::parse_value(&s);
    }

    #[test]
    fn secret_references_round_trip(
        backend in proptest::option::of("[a-z][a-z0-9_-]{0,8}"),
        key in "[A-Za-z0-9_./:-]{1,30}",
        params in proptest::collection::vec(("[a-z]{1,6}", "[A-Za-z0-9_.-]{1,6}"), 0..3),
        field in proptest::option::of("[A-Za-z0-9_-]{1,10}"),
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let params: Vec<(String, String)> = params.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
        let r = SecretRef { backend, key, params, field };
        let text = r.to_string();
        prop_assert_eq!(
            reference::parse_value(&text).unwrap(),
            vec![Part::Ref(Reference::Secret(r))]
        );
    }

    #[test]
    fn manifest_parse_never_panics(s in "(environment|secrets|backends|type|local|env|files|dotenv|path|[:\\-{}\\[\\]\"' \\n]|[a-z]{1,4}){0,40}") {
        let _ = Manifest::parse(&s, Path::new("m.yaml"), PathBuf::from("/"));
    }
}
