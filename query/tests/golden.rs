//! Golden transcripts: every file in `tests/golden/` is run by the in-memory driver and must
//! reproduce itself exactly (statements, outputs, errors). `RUNNEL_BLESS=1` rewrites them.

use runnel_query::script::Script;

#[test]
fn golden_transcripts_reproduce() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
    {
        let expected = std::fs::read_to_string(path).expect("golden file");
        let actual = Script::new().run(&expected);
        if actual != expected {
            if std::env::var_os("RUNNEL_BLESS").is_some() {
                std::fs::write(path, &actual).expect("bless");
            } else {
                failures.push(format!("{}:\n{actual}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ (RUNNEL_BLESS=1 rewrites):\n{}",
        failures.join("\n")
    );
    assert!(entries.len() >= 5, "golden files missing");
}
