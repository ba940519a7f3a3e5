//! Every ```sql block of `docs/sql.md` runs, in order, in one session, and must show exactly
//! the output written under its statements (`-->` lines). `RUNNEL_BLESS=1` rewrites them.

use runnel_query::script::Script;

#[test]
fn docs_sql_examples_run() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql.md");
    let text = std::fs::read_to_string(&path).expect("docs/sql.md");
    let mut script = Script::new();
    let mut blocks = 0;
    let mut rewritten = String::new();
    let mut differences = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```sql\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").expect("every ```sql block is closed");
        let block = &body[..end];
        let actual = script.run(block);
        if actual != block {
            differences.push(format!(
                "block {blocks}: expected\n{block}\nactual\n{actual}"
            ));
        }
        rewritten.push_str(&rest[..start + 7]);
        rewritten.push_str(&actual);
        blocks += 1;
        rest = &body[end..];
    }
    rewritten.push_str(rest);
    if !differences.is_empty() && std::env::var_os("RUNNEL_BLESS").is_some() {
        std::fs::write(&path, rewritten).expect("bless docs/sql.md");
        return;
    }
    assert!(
        differences.is_empty(),
        "docs/sql.md examples differ (RUNNEL_BLESS=1 rewrites):\n{}",
        differences.join("\n")
    );
    assert!(blocks >= 8, "docs/sql.md has too few examples: {blocks}");
}
