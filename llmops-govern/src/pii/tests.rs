use super::*;

fn kinds(text: &str) -> Vec<(String, &str)> {
    PiiScanner::new()
        .scan(text)
        .into_iter()
        .map(|f| (f.kind.as_str().to_owned(), &text[f.start..f.end]))
        .collect()
}

#[test]
fn finds_each_builtin_type_with_spans() {
    let text = "mail ann@example.com, card 4111 1111 1111 1111, iban DE89370400440532013000, \
                ssn 536-22-1234, call +1 650-253-0000, host 10.0.0.1 or 2001:db8::1, \
                key AKIAIOSFODNN7EXAMPLE and sk-proj-abcdefghijklmnopqrstuvwx";
    let found = kinds(text);
    let expect = [
        ("email", "ann@example.com"),
        ("credit_card", "4111 1111 1111 1111"),
        ("iban", "DE89370400440532013000"),
        ("us_ssn", "536-22-1234"),
        ("phone", "+1 650-253-0000"),
        ("ip_address", "10.0.0.1"),
        ("ip_address", "2001:db8::1"),
        ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
        ("api_key", "sk-proj-abcdefghijklmnopqrstuvwx"),
    ];
    for (k, v) in expect {
        assert!(
            found.contains(&(k.to_owned(), v)),
            "missing {k} {v}: {found:?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:?}");
}

#[test]
fn look_alikes_are_not_flagged() {
    for text in [
        "order 4111 1111 1111 1112 shipped",
        "version 1.2.3.400 released",
        "the time is 12:30:45",
        "call me at extension 12345",
        "ISBN 978-3-16-148410-0",
        "id 000-12-3456 is a placeholder",
        "email me at ann@ or bob@localhost",
        "sk-short",
    ] {
        assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
    }
}

#[test]
fn context_words_raise_bare_ssn_scores() {
    assert!(kinds("reference 536221234").is_empty());
    assert_eq!(
        kinds("my ssn is 536221234"),
        vec![("us_ssn".to_owned(), "536221234")]
    );
}

#[test]
fn actions_apply_per_type() {
    let guard = PiiGuard::new(
        PiiScanner::new(),
        PiiPolicy::uniform(PiiAction::Redact)
            .with("credit_card", PiiAction::Mask)
            .with("phone", PiiAction::Hash),
    );
    let a = guard
        .apply_text("ann@example.com paid with 4111-1111-1111-1111, tel +44 20 7031 3000")
        .unwrap();
    assert!(
        a.text
            .starts_with("[EMAIL] paid with ****-****-****-1111, tel [PHONE:"),
        "{}",
        a.text
    );
    // Hashes are stable.
    let b = guard.apply_text("tel +44 20 7031 3000").unwrap();
    assert_eq!(
        &a.text[a.text.find("[PHONE").unwrap()..],
        &b.text[b.text.find("[PHONE").unwrap()..]
    );
    // Nothing found: borrowed.
    assert!(matches!(
        guard.apply_text("hello").unwrap().text,
        Cow::Borrowed(_)
    ));
}

#[test]
fn block_refuses_and_log_redaction_never_refuses() {
    let guard = PiiGuard::new(
        PiiScanner::new(),
        PiiPolicy::uniform(PiiAction::Redact).with("private_key", PiiAction::Block),
    );
    let text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    let err = guard.apply_text(text).unwrap_err();
    assert_eq!(err.types, vec!["private_key".to_owned()]);
    let core: llmops_core::Error = err.into();
    assert_eq!(core.kind(), llmops_core::ErrorKind::PolicyViolation);
    assert_eq!(guard.redact_for_log(text), "[PRIVATE_KEY]");
}

#[test]
fn requests_are_rewritten_in_place() {
    let guard = PiiGuard::default();
    let mut req = ChatRequest::new(
        "m",
        vec![
            llmops_core::Message::system("be nice"),
            llmops_core::Message::user("I am ann@example.com"),
        ],
    );
    let report = guard.apply_request(&mut req).unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].0, 1);
    assert_eq!(req.messages[1].text(), "I am [EMAIL]");
    assert_eq!(req.messages[0].text(), "be nice");
}

#[test]
fn custom_patterns_and_bad_patterns() {
    let scanner = PiiScanner::new()
        .with_recognizer(Recognizer::custom("employee_id", r"\bEMP-\d{6}\b", 0.9).unwrap());
    let f = scanner.scan("ask EMP-123456 about it");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind.as_str(), "employee_id");
    assert!(matches!(
        Recognizer::custom("x", "(", 0.5),
        Err(GovernError::Pattern { .. })
    ));
}

#[test]
fn streaming_catches_secrets_split_across_chunks() {
    let guard = Arc::new(PiiGuard::default());
    let text = "here is the key sk-proj-abcdefghijklmnopqrstuvwxyz012345 and mail ann@example.com, \
                plus a JWT eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U done";
    let expected = guard.apply_text(text).unwrap().text.into_owned();
    for size in [1, 2, 3, 5, 7, 16, 64] {
        let mut r = StreamRedactor::new(guard.clone());
        let mut out = String::new();
        let bytes: Vec<char> = text.chars().collect();
        for chunk in bytes.chunks(size) {
            let s: String = chunk.iter().collect();
            out.push_str(&r.push(&s).unwrap());
        }
        out.push_str(&r.finish().unwrap());
        assert_eq!(out, expected, "chunk size {size}");
        assert!(!out.contains("sk-proj"));
        assert_eq!(r.findings().len(), 3, "chunk size {size}");
    }
}

#[test]
fn streaming_holds_an_unterminated_private_key() {
    let guard = Arc::new(PiiGuard::default());
    let mut r = StreamRedactor::new(guard);
    let mut out = r
        .push("a\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
        .unwrap();
    out.push_str(&r.push(&"AAAA\n".repeat(40)).unwrap());
    assert!(!out.contains("MIIE"), "{out}");
    out.push_str(&r.push("-----END PRIVATE KEY-----\nbye").unwrap());
    out.push_str(&r.finish().unwrap());
    assert_eq!(out, "a\n[PRIVATE_KEY]\nbye");
}
