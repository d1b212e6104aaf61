//! The language end to end: text -> tree -> rhai script -> match, as tables of cases. Every case
//! is also checked against the Rust interpreter ([`fold::evaluate`]), so the scripts and the
//! reference semantics cannot drift apart.

use serde_json::{Value, json};

use super::fold::evaluate;
use super::*;

fn auth_of(claims: Value) -> Auth {
    match claims {
        Value::Null => Auth::guest(),
        Value::Object(map) => Auth::from_claims(&map),
        other => panic!("claims must be an object, got {other}"),
    }
}

/// Does `filter` match `record` for the subscriber with `claims` (null = guest)?
fn matches(filter: &str, record: Value, claims: Value) -> bool {
    let engine = FilterEngine::new();
    let expr = Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
        .expr()
        .cloned();
    let compiled = engine
        .compile(expr.clone())
        .unwrap_or_else(|e| panic!("{filter:?} should compile: {e}"));
    let record = Record::from_json(&record).expect("records are objects");
    let auth = auth_of(claims);
    let by_script = engine.evaluation(record.clone()).matches(&compiled, &auth);
    if let Some(expr) = &expr {
        assert_eq!(
            by_script,
            evaluate(expr, &record, &auth),
            "script and interpreter disagree on {filter:?}"
        );
    }
    assert_eq!(engine.eval_errors(), 0, "{filter:?} failed to evaluate");
    by_script
}

fn check(cases: &[(&str, Value, bool)]) {
    for (filter, record, expected) in cases {
        assert_eq!(
            matches(filter, record.clone(), Value::Null),
            *expected,
            "{filter:?} on {record}"
        );
    }
}

#[test]
fn velo_examples() {
    let active = json!({"status": "active", "title": "Hello World", "age": 30});
    let draft = json!({"status": "draft", "title": "WIP", "age": 12});
    check(&[
        ("status = 'active'", active.clone(), true),
        ("status = 'active'", draft.clone(), false),
        ("status = active", active.clone(), true),
        ("status=active", active.clone(), true),
        ("status=active", draft.clone(), false),
        ("age > 18 AND status = \"active\"", active.clone(), true),
        ("age > 18 AND status = \"active\"", draft.clone(), false),
        ("title LIKE \"Hello%\"", active.clone(), true),
        ("title LIKE \"Hello%\"", draft.clone(), false),
    ]);
    let mine = json!({"user": "u1", "title": "x"});
    assert!(matches(
        "@request.auth.id = user",
        mine.clone(),
        json!({"id": "u1"})
    ));
    assert!(!matches(
        "@request.auth.id = user",
        mine.clone(),
        json!({"id": "u2"})
    ));
    assert!(!matches("@request.auth.id = user", mine, Value::Null));
}

#[test]
fn equality_and_inequality() {
    let r = json!({"s": "Active", "n": 18, "f": 2.5, "b": true, "z": null, "ns": "18.0", "o": {"a": 1}});
    check(&[
        ("s = 'Active'", r.clone(), true),
        ("s = 'active'", r.clone(), false), // case-sensitive
        ("s == 'Active'", r.clone(), true),
        ("s != 'Active'", r.clone(), false),
        ("s <> 'x'", r.clone(), true),
        ("n = 18", r.clone(), true),
        ("n = 18.0", r.clone(), true),
        ("n = '18'", r.clone(), true),   // numeric string vs number
        ("ns = 18", r.clone(), true),    // "18.0" = 18
        ("ns = '18'", r.clone(), false), // two strings compare exactly
        ("f = 2.5", r.clone(), true),
        ("b = true", r.clone(), true),
        ("b = TRUE", r.clone(), true),
        ("b = 'true'", r.clone(), false), // different types
        ("b != false", r.clone(), true),
        ("z = null", r.clone(), true),
        ("missing = null", r.clone(), true),
        ("missing != null", r.clone(), false),
        ("missing != 'x'", r.clone(), true),
        ("missing = ''", r.clone(), false),
        ("s = null", r.clone(), false),
        ("o.a = 1", r.clone(), true),
        ("o.b = null", r.clone(), true),
        ("s.deeper = null", r.clone(), true),
        ("n = -18", r.clone(), false),
        ("'Active' = s", r.clone(), true), // a bare word right of a value is a field
    ]);
}

#[test]
fn ordering() {
    let r = json!({"n": 18, "s": "b", "ns": "20", "t": "2026-11-29T20:15:03.123Z", "z": null, "b": true});
    check(&[
        ("n > 17", r.clone(), true),
        ("n > 18", r.clone(), false),
        ("n >= 18", r.clone(), true),
        ("n < 18.5", r.clone(), true),
        ("n <= 17", r.clone(), false),
        ("n > '9'", r.clone(), true), // numeric, not lexicographic
        ("ns > 9", r.clone(), true),
        ("ns > '9'", r.clone(), false), // two strings: by code point
        ("s > 'a'", r.clone(), true),
        ("s < 'B'", r.clone(), false), // 'b' (98) > 'B' (66)
        ("t > '2026-01-01'", r.clone(), true),
        ("z > 1", r.clone(), false),
        ("z < 1", r.clone(), false),
        ("missing >= 0", r.clone(), false),
        ("missing <= ''", r.clone(), false),
        ("b > false", r.clone(), false), // booleans have no order
        ("s > 1", r.clone(), false),     // a non-numeric string and a number: no order
    ]);
}

#[test]
fn integers_compare_exactly_across_64_bits() {
    // 2^53 + 1 has no float of its own: as a float it would equal 2^53.
    let r: Value = serde_json::from_str(
        r#"{"n": 9007199254740993, "f": 9007199254740992.0, "u": 18446744073709551615,
            "m": -9223372036854775808, "s": "9007199254740993"}"#,
    )
    .unwrap();
    check(&[
        ("n = 9007199254740993", r.clone(), true),
        ("n = 9007199254740992", r.clone(), false),
        ("n > 9007199254740992", r.clone(), true),
        ("n <= 9007199254740992", r.clone(), false),
        (
            "n IN (9007199254740992, 9007199254740994)",
            r.clone(),
            false,
        ),
        ("n = '9007199254740993'", r.clone(), true), // a numeric string, read exactly
        ("s = 9007199254740993", r.clone(), true),
        ("s = 9007199254740992", r.clone(), false),
        ("n LIKE '%993'", r.clone(), true), // by its exact text
        ("f = 9007199254740992", r.clone(), true), // an integer and a float: by value
        ("f < 9007199254740993", r.clone(), true),
        ("f = 9007199254740992.0", r.clone(), true),
        ("u = 18446744073709551615", r.clone(), true),
        ("u = 18446744073709551614", r.clone(), false),
        ("u > 9223372036854775807", r.clone(), true),
        ("u < 1.8446744073709552e19", r.clone(), true), // 2^64 as a float
        ("m = -9223372036854775808", r.clone(), true),
        ("m < -9223372036854775807", r.clone(), true),
    ]);
}

#[test]
fn like_and_not_like() {
    let r = json!({"t": "Hello World", "n": 1234, "z": null, "u": "Ünïcödé"});
    check(&[
        ("t LIKE 'hello%'", r.clone(), true), // case-insensitive
        ("t LIKE '%WORLD'", r.clone(), true),
        ("t LIKE 'world'", r.clone(), true), // no wildcard: contains
        ("t LIKE 'lo wo'", r.clone(), true),
        ("t LIKE 'xyz'", r.clone(), false),
        ("t LIKE 'H_llo%'", r.clone(), true),
        ("t LIKE 'H_llo'", r.clone(), false), // wildcards: the whole text must match
        ("t LIKE '%o%o%'", r.clone(), true),
        ("t LIKE '%'", r.clone(), true),
        ("t LIKE ''", r.clone(), true), // contains the empty string
        ("t NOT LIKE 'world'", r.clone(), false),
        ("t not like 'xyz'", r.clone(), true),
        ("n LIKE '23'", r.clone(), true), // numbers by their text
        ("u LIKE 'üNÏ%'", r.clone(), true),
        ("z LIKE '%'", r.clone(), false), // null never matches
        ("missing LIKE ''", r.clone(), false),
        ("z NOT LIKE 'x'", r.clone(), true), // the negation of false
    ]);
}

#[test]
fn in_and_not_in() {
    let r = json!({"s": "b", "n": 2, "z": null, "tags": ["x", "y"]});
    check(&[
        ("s IN ('a', 'b')", r.clone(), true),
        ("s IN (a, b)", r.clone(), true), // bare words in a list are strings
        ("s IN ('a')", r.clone(), false),
        ("s NOT IN ('a')", r.clone(), true),
        ("s not in ('a', 'b')", r.clone(), false),
        ("n IN (1, 2, 3)", r.clone(), true),
        ("n IN ('2')", r.clone(), true),
        ("z IN (null, 'a')", r.clone(), false), // null is never a member
        ("z NOT IN ('a')", r.clone(), true),
        ("missing IN (null)", r.clone(), false),
        ("'x' IN tags", r.clone(), true), // a field holding an array
        ("'z' IN tags", r.clone(), false),
        ("'x' NOT IN tags", r.clone(), false),
    ]);
    assert!(matches(
        "s IN @request.auth.groups",
        r.clone(),
        json!({"groups": ["a", "b"]})
    ));
    assert!(!matches(
        "s IN @request.auth.groups",
        r.clone(),
        json!({"groups": "b"})
    ));
    assert!(!matches("s IN @request.auth.groups", r, Value::Null));
}

#[test]
fn logic_and_precedence() {
    let r = json!({"a": 1, "b": 2, "c": 3});
    check(&[
        ("a = 1 AND b = 2", r.clone(), true),
        ("a = 1 && b = 3", r.clone(), false),
        ("a = 9 OR b = 2", r.clone(), true),
        ("a = 9 || b = 9", r.clone(), false),
        // AND binds tighter than OR: a=9 OR (b=2 AND c=3)
        ("a = 9 OR b = 2 AND c = 3", r.clone(), true),
        // (a=1 OR b=9) AND c=9
        ("(a = 1 OR b = 9) AND c = 9", r.clone(), false),
        ("a = 1 OR b = 9 AND c = 9", r.clone(), true),
        ("NOT a = 1", r.clone(), false),
        ("!a = 2", r.clone(), true),
        ("NOT (a = 1 AND b = 9)", r.clone(), true),
        ("not not a = 1", r.clone(), true),
        ("((((a = 1))))", r.clone(), true),
        ("a = 1 and b = 2 or c = 9", r.clone(), true),
        ("a=1&&(b=9||c=3)", r.clone(), true),
    ]);
}

#[test]
fn strings_and_escapes() {
    let r = json!({"q": "it's \"quoted\"", "p": "a\\b", "nl": "line\nbreak"});
    check(&[
        (r#"q = 'it\'s "quoted"'"#, r.clone(), true),
        (r#"q = "it's \"quoted\"""#, r.clone(), true),
        (r#"p = 'a\\b'"#, r.clone(), true),
        (r#"nl = "line\nbreak""#, r.clone(), true),
        (r#"nl LIKE '%\n%'"#, r.clone(), true),
    ]);
}

#[test]
fn injection_is_only_ever_a_literal() {
    let payload = r#"x" || true || ""#;
    let literal = json!({ "status": payload });
    let other = json!({"status": "active"});
    let filter = r#"status = "x\" || true || \"""#;
    assert!(matches(filter, literal, Value::Null));
    assert!(!matches(filter, other.clone(), Value::Null));
    // Rhai syntax inside strings and field-looking words is data, never code.
    for filter in [
        r#"status = "eq(1, 1) || true""#,
        r#"status = '); true; ('"#,
        r#"status = "} let x = 1; {""#,
        r#"status = "${record}""#,
        r#"status = "c0""#,
        r#"status = "record""#,
        "status = record",
        "status = c1",
        "status = true_or_not",
        r#"status LIKE "\"%""#,
    ] {
        assert!(!matches(filter, other.clone(), Value::Null), "{filter}");
    }
    assert!(matches(
        r#"status = "c0""#,
        json!({"status": "c0"}),
        Value::Null
    ));
    assert!(matches(
        "status = record",
        json!({"status": "record"}),
        Value::Null
    ));
}

#[test]
fn auth_values() {
    let r = json!({"owner": "u1", "team": "t1", "level": 3});
    let user = json!({"id": "u1", "team": "t1", "level": "3", "verified": true});
    assert!(matches("owner = @request.auth.id", r.clone(), user.clone()));
    assert!(matches(
        "team = @request.auth.team AND level = @request.auth.level",
        r.clone(),
        user.clone()
    ));
    assert!(matches(
        "@request.auth.verified = true",
        r.clone(),
        user.clone()
    ));
    assert!(matches(
        "@request.auth.missing = ''",
        r.clone(),
        user.clone()
    ));
    assert!(!matches("@request.auth.id != ''", r.clone(), Value::Null));
    assert!(matches("@request.auth.id = ''", r.clone(), Value::Null));
    assert!(matches(
        "@request.auth.profile.name = 'Ann'",
        r.clone(),
        json!({"id": "u", "profile": {"name": "Ann"}})
    ));
    // `id` falls back to the `sub` claim.
    assert!(matches(
        "owner = @request.auth.id",
        r.clone(),
        json!({"sub": "u1"})
    ));
    assert!(!matches(
        "owner = @request.auth.id",
        r,
        json!({"sub": "u2", "id": "u3"})
    ));
}

fn rule(text: &str) -> Rule {
    Rule::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

#[test]
fn rules_and_guest_admission() {
    assert_eq!(rule(""), Rule::Public);
    assert_eq!(rule("   "), Rule::Public);
    assert_eq!(rule("SUPERUSER_ONLY"), Rule::SuperuserOnly);
    assert_eq!(rule("superuser_only"), Rule::SuperuserOnly);
    assert!(rule("SUPERUSER_ONLY").is_superuser_only());
    assert!(!rule("").is_superuser_only());
    for (text, guest) in [
        ("", true),
        ("SUPERUSER_ONLY", false),
        ("status = 'public'", true), // reads no auth: each record decides
        ("@request.auth.id != ''", false),
        ("@request.auth.id = ''", true),
        ("author = @request.auth.id", false), // needs a record field: not admitted
        ("@request.auth.id != '' || status = 'public'", false),
        ("@request.auth.id = '' || author = @request.auth.id", true),
        ("@request.auth.role = 'admin' AND status = 'x'", false),
        ("NOT @request.auth.verified = true", true),
    ] {
        assert_eq!(rule(text).admits_guest(), guest, "{text:?}");
    }
    assert!(Rule::parse("SUPERUSER_ONLY AND a = 1").is_err());
    assert!(Filter::parse("SUPERUSER_ONLY").is_err());
    assert_eq!(Filter::parse("").unwrap().expr(), None);
}

/// `(rule) AND (filter)` for the subscriber; each side keeps its own OR.
fn combined(rule_text: &str, filter: &str, record: Value, claims: Value, superuser: bool) -> bool {
    let engine = FilterEngine::new();
    let condition = condition(&rule(rule_text), &Filter::parse(filter).unwrap(), superuser);
    let compiled = engine.compile(condition).unwrap();
    let auth = auth_of(claims);
    engine
        .evaluation(Record::from_json(&record).unwrap())
        .matches(&compiled, &auth)
}

#[test]
fn rule_and_filter_keep_their_own_parentheses() {
    let alice = json!({"id": "alice"});
    // Velo concatenated the strings, making this `owner = alice OR public = true AND status = draft`,
    // which would deliver alice's draft to a filter that asked for published records.
    let rule = "owner = @request.auth.id || public = true";
    let alices_draft = json!({"owner": "alice", "public": false, "status": "draft"});
    let bobs_public = json!({"owner": "bob", "public": true, "status": "published"});
    assert!(!combined(
        rule,
        "status = 'published'",
        alices_draft.clone(),
        alice.clone(),
        false
    ));
    assert!(combined(
        rule,
        "status = 'published'",
        bobs_public.clone(),
        alice.clone(),
        false
    ));
    // The filter's OR stays inside the filter.
    let bobs_private = json!({"owner": "bob", "public": false, "status": "published"});
    assert!(!combined(
        "owner = @request.auth.id",
        "status = 'draft' || status = 'published'",
        bobs_private.clone(),
        alice.clone(),
        false
    ));
    assert!(combined(
        "owner = @request.auth.id",
        "status = 'draft' || status = 'published'",
        alices_draft.clone(),
        alice.clone(),
        false
    ));
    // The admin bypasses the rule, never the filter.
    assert!(combined(
        "owner = @request.auth.id",
        "status = 'published'",
        bobs_private.clone(),
        Value::Null,
        true
    ));
    assert!(!combined(
        "owner = @request.auth.id",
        "status = 'draft'",
        bobs_private.clone(),
        Value::Null,
        true
    ));
    assert!(combined(
        "SUPERUSER_ONLY",
        "",
        bobs_private.clone(),
        Value::Null,
        true
    ));
    // The empty rule and the empty filter add nothing.
    assert!(combined("", "", bobs_private.clone(), Value::Null, false));
    assert!(combined(
        "",
        "owner = bob",
        bobs_private.clone(),
        Value::Null,
        false
    ));
    assert!(!combined(
        "",
        "owner = alice",
        bobs_private,
        Value::Null,
        false
    ));
    // Guest vs authenticated under the same rule.
    assert!(!combined(
        "owner = @request.auth.id",
        "",
        alices_draft.clone(),
        Value::Null,
        false
    ));
    assert!(combined(
        "owner = @request.auth.id",
        "",
        alices_draft,
        alice,
        false
    ));
}

#[test]
fn canonical_text_parses_back_to_the_same_tree() {
    for text in [
        "status = 'active'",
        "a = 1 OR b = 2 AND NOT (c LIKE '%x_' OR d IN (1, 'two', null, true))",
        r#"q = "it's \"q\" \\ \n\t" AND @request.auth.id = owner"#,
        "n >= -1.5e3 AND m NOT IN ('a') AND t NOT LIKE 'x'",
        "'x' IN tags AND @request.auth.id IN editors",
    ] {
        let expr = Filter::parse(text).unwrap().expr().cloned().unwrap();
        let again = Filter::parse(&expr.to_string()).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(again.expr(), Some(&expr), "{text} -> {expr}");
    }
}

/// Parses `text` as a filter, expecting an error at `column` whose text mentions `expected`.
fn refused(text: &str) -> ParseError {
    match Filter::parse(text) {
        Ok(filter) => panic!("{text:?} should be refused, parsed as {:?}", filter.expr()),
        Err(error) => error,
    }
}

#[test]
fn parse_errors_say_what_where_and_why() {
    for (text, column, expected, found) in [
        ("status = ", 10, "a value", "the end of the expression"),
        (
            "status = 'x",
            10,
            "closing `'`",
            "the end of the expression",
        ),
        ("status ~ 'x'", 8, "an operand, an operator", "`~`"),
        (
            "status",
            7,
            "a comparison operator",
            "the end of the expression",
        ),
        ("(a = 1", 7, "`)`", "the end of the expression"),
        ("a = 1)", 6, "`AND`, `OR` or the end", "`)`"),
        ("a = 1 b = 2", 7, "`AND`, `OR` or the end", "`b`"),
        ("a = (1, 2)", 5, "a single value", "`(`"),
        ("a IN 'x'", 6, "a list", "a string"),
        ("a IN ()", 7, "a value in the list", "`)`"),
        ("a IN (1 2)", 9, "`,` or `)`", "a number"),
        (
            "a IN (1,",
            9,
            "a value in the list",
            "the end of the expression",
        ),
        ("@foo.bar = 1", 1, "`@request.auth.<field>`", "`@foo.bar`"),
        (
            "@request.auth = 1",
            1,
            "`@request.auth.<field>`",
            "`@request.auth`",
        ),
        ("@request.auth.a..b = 1", 15, "a field path", "`a..b`"),
        ("a = 1 AND", 10, "a comparison", "the end of the expression"),
        ("a = 1 OR OR b = 2", 10, "a field", "`OR`"),
        ("NOT", 4, "a comparison", "the end of the expression"),
        ("a NOT = 1", 7, "`LIKE` or `IN` after `NOT`", "`=`"),
        ("a = 'x\\q'", 7, "an escape", "`\\q`"),
        (
            "a = 1.",
            5,
            "digits after the decimal point",
            "the end of the expression",
        ),
        (
            "a = 1e",
            5,
            "digits in the exponent",
            "the end of the expression",
        ),
        ("a = 12abc", 5, "a space or an operator", "`a`"),
        ("a = 1e999", 5, "a number within the range", "`1e999`"),
        (
            "a = 18446744073709551616",
            5,
            "an integer within 64 bits",
            "`18446744073709551616`",
        ),
        (
            "a = -9223372036854775809",
            5,
            "an integer within 64 bits",
            "`-9223372036854775809`",
        ),
        ("author. = 1", 1, "a field path", "`author.`"),
        ("name = 'ñññ' AND ~", 18, "an operand", "`~`"), // columns count characters, not bytes
        (
            "a = 1 AND SUPERUSER_ONLY",
            11,
            "can only be a whole API rule",
            "`SUPERUSER_ONLY`",
        ),
        ("a & b", 3, "an operand, an operator", "`&`"),
    ] {
        let error = refused(text);
        assert_eq!(error.column, column, "{text:?}: {error}");
        assert!(error.expected.contains(expected), "{text:?}: {error}");
        assert_eq!(error.found, found, "{text:?}: {error}");
        assert_eq!(
            error.to_string(),
            format!(
                "expected {}, found {} at position {column}",
                error.expected, error.found
            )
        );
    }
}

/// Runs `f` on another thread and fails the test if it takes more than a generous bound: this
/// only guards against hangs, it measures nothing.
fn without_hanging<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(f()));
    result
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} hung or panicked"))
}

#[test]
fn abuse_gets_a_clear_error_or_the_right_answer() {
    let too_deep = without_hanging("10,000 nested parentheses", || {
        let text = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        Filter::parse(&text).unwrap_err()
    });
    assert!(
        too_deep.expected.contains("at most 4096 bytes"),
        "{too_deep}"
    );

    let too_deep = without_hanging("2,000 nested parentheses", || {
        let text = format!("{}a = 1{}", "(".repeat(2_000), ")".repeat(2_000));
        Filter::parse(&text).unwrap_err()
    });
    assert_eq!(too_deep.column, MAX_DEPTH + 1, "{too_deep}");
    assert!(
        too_deep.expected.contains("levels of parentheses"),
        "{too_deep}"
    );

    let nots = without_hanging("3,000 NOTs", || {
        Filter::parse(&format!("{}a = 1", "!".repeat(3_000))).unwrap_err()
    });
    assert!(
        nots.expected.contains("levels of parentheses and NOT"),
        "{nots}"
    );

    let huge = without_hanging("a 1 MB filter", || {
        let text = format!("status = '{}'", "x".repeat(1 << 20));
        Filter::parse(&text).unwrap_err()
    });
    assert_eq!(huge.column, MAX_EXPRESSION_BYTES + 1);
    assert!(huge.found.contains("1048587 bytes"), "{huge}");

    let long_list = without_hanging("a 501-value list", || {
        let items: Vec<String> = (0..=MAX_LIST_ITEMS).map(|i| i.to_string()).collect();
        Filter::parse(&format!("n IN ({})", items.join(","))).unwrap_err()
    });
    assert!(
        long_list.expected.contains("at most 500 values"),
        "{long_list}"
    );

    // At the limits, everything still parses, compiles and answers correctly.
    let items: Vec<String> = (0..MAX_LIST_ITEMS).map(|i| i.to_string()).collect();
    let list = format!("n IN ({})", items.join(","));
    assert!(matches(&list, json!({"n": 499}), Value::Null));
    assert!(!matches(&list, json!({"n": 500}), Value::Null));

    let deepest = format!(
        "{}a = 1{}",
        "NOT (".repeat(MAX_DEPTH / 2),
        ")".repeat(MAX_DEPTH / 2)
    );
    assert!(matches(&deepest, json!({"a": 1}), Value::Null));
    let nested = format!(
        "{}a = 1{}",
        "(b = 2 OR ".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert!(matches(&nested, json!({"a": 1}), Value::Null));
    assert!(!matches(&nested, json!({"a": 3}), Value::Null));

    let mut chain = String::from("a = 1");
    while chain.len() + " AND a = 1".len() <= MAX_EXPRESSION_BYTES {
        chain.push_str(" AND a = 1");
    }
    assert!(matches(&chain, json!({"a": 1}), Value::Null));
    assert!(!matches(
        &chain.replacen("a = 1", "a = 2", 1),
        json!({"a": 1}),
        Value::Null
    ));
    let or_chain = chain.replace(" AND ", " OR ").replacen("a = 1", "a = 2", 1);
    assert!(matches(&or_chain, json!({"a": 1}), Value::Null));

    // A LIKE that would be exponential with naive backtracking finishes at once.
    let record = json!({"t": "a".repeat(200_000)});
    let pattern = format!("t LIKE '{}b'", "%a".repeat(1_000));
    assert!(!without_hanging("a pathological LIKE", move || matches(
        &pattern,
        record,
        Value::Null
    )));
}
