// `sqlx::migrate!` embeds the migration files at compile time; a new or edited file must
// rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
