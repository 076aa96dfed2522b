//! Paths that pipeline files name: relative to the pipeline's project folder, and never
//! leading out of it, by `..` or through a symbolic link. The pipeline checker and the
//! kinds that take paths (`command`'s outputs) share these rules.

use std::path::{Component, Path};

/// Paths in pipeline files are relative to the pipeline's project folder and may not
/// leave it.
pub fn check_relative_path(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if p.is_empty() {
        return Err("the path is empty".into());
    }
    if path.is_absolute() {
        return Err(format!("`{p}` is absolute; paths must be relative to the project folder"));
    }
    let mut depth: i64 = 0;
    for c in path.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err(format!("`{p}` is not a plain relative path")),
        }
        if depth < 0 {
            return Err(format!("`{p}` leaves the project folder"));
        }
    }
    Ok(())
}

/// `rel` (checked by [`check_relative_path`]) resolved through symbolic links still lies
/// inside `project`.
pub fn inside_project(project: &Path, rel: &str) -> Result<(), String> {
    let (Ok(root), Ok(real)) = (project.canonicalize(), project.join(rel).canonicalize()) else {
        return Ok(()); // a missing file is reported when it is read
    };
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(format!("`{rel}` leads outside the project folder (to {}) through a symbolic link", real.display()))
    }
}
