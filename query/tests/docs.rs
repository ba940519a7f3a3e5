//! Every ```sql block of `docs/sql.md` runs, in order, in one session, and must show exactly
//! the output written under its statements.

use runnel_query::script::Script;

#[test]
fn docs_sql_examples_run() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql.md");
    let text = std::fs::read_to_string(&path).expect("docs/sql.md");
    let mut script = Script::new();
    let mut blocks = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```sql\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").expect("closed block");
        let block = &body[..end];
        let actual = script.run(block);
        assert_eq!(
            actual, block,
            "docs/sql.md block {blocks} differs; expected:\n{block}\nactual:\n{actual}"
        );
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 5, "docs/sql.md has too few examples: {blocks}");
}
