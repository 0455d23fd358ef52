//! Unpacking a downloaded archive (zip or tar.gz) into a folder, keeping only the members whose
//! path matches a glob, and never writing outside the folder (absolute paths and `..` in member
//! names are refused).

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

/// An archive format `extract:` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[schemars(rename = "HttpArchiveFormat")]
pub enum ArchiveFormat {
    /// A zip file (stored or deflated members).
    #[serde(rename = "zip")]
    Zip,
    /// A gzip-compressed tar file.
    #[serde(rename = "tar.gz")]
    TarGz,
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::TarGz => "tar.gz",
        })
    }
}

/// Which members to keep: those whose path inside the archive matches one of the globs (all
/// members when there are none). `*` also matches `/`, so `*.txt` keeps `data/a.txt`.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    patterns: Vec<glob::Pattern>,
}

impl MemberFilter {
    /// Compiles the globs; the error names the one that does not parse.
    pub fn new(globs: &[String]) -> Result<MemberFilter, String> {
        let patterns = globs
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| format!("\"{g}\" is not a valid glob: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(MemberFilter { patterns })
    }

    /// Whether the member at `path` is kept.
    pub fn keeps(&self, path: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(path))
    }

    fn describe(&self) -> String {
        self.patterns.iter().map(|p| format!("\"{}\"", p.as_str())).collect::<Vec<_>>().join(", ")
    }
}

/// Unpacks the kept members of `archive` into `into`, returning the files written, in archive
/// order. An archive with no file the filter keeps is an error that lists what it holds.
pub fn extract(archive: &Path, format: ArchiveFormat, filter: &MemberFilter, into: &Path) -> Result<Vec<PathBuf>, String> {
    let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut seen = Vec::new();
    let written = match format {
        ArchiveFormat::Zip => extract_zip(archive, filter, into, &mut seen),
        ArchiveFormat::TarGz => extract_tar_gz(archive, filter, into, &mut seen),
    }
    .map_err(|e| format!("cannot extract {name} as {format}: {e}"))?;
    if written.is_empty() {
        let listed = if seen.is_empty() {
            "it has no files".to_string()
        } else {
            let mut shown: Vec<String> = seen.iter().take(10).cloned().collect();
            if seen.len() > 10 {
                shown.push(format!("and {} more", seen.len() - 10));
            }
            format!("it holds {}", shown.join(", "))
        };
        return Err(format!("no member of {name} matches members {}: {listed}", filter.describe()));
    }
    Ok(written)
}

/// The path under `into` for a member, or an error for a name that would leave it.
fn member_path(into: &Path, member: &str) -> io::Result<PathBuf> {
    let relative = Path::new(member);
    let safe = relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !safe || member.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("member \"{member}\" would be written outside the destination folder")));
    }
    Ok(into.join(relative))
}

fn write_member(into: &Path, member: &str, reader: &mut dyn io::Read) -> io::Result<PathBuf> {
    let path = member_path(into, member)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = File::create(&path)?;
    io::copy(reader, &mut out)?;
    out.sync_all()?;
    Ok(path)
}

fn extract_zip(archive: &Path, filter: &MemberFilter, into: &Path, seen: &mut Vec<String>) -> io::Result<Vec<PathBuf>> {
    let file = File::open(archive)?;
    let mut zip = zip::ZipArchive::new(file).map_err(io::Error::other)?;
    let mut written = Vec::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(io::Error::other)?;
        if entry.is_dir() || entry.is_symlink() {
            continue;
        }
        let name = entry.name().to_string();
        seen.push(name.clone());
        if !filter.keeps(&name) {
            continue;
        }
        if entry.enclosed_name().is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("member \"{name}\" would be written outside the destination folder")));
        }
        written.push(write_member(into, &name, &mut entry)?);
    }
    Ok(written)
}

fn extract_tar_gz(archive: &Path, filter: &MemberFilter, into: &Path, seen: &mut Vec<String>) -> io::Result<Vec<PathBuf>> {
    let file = File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut written = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        seen.push(name.clone());
        if !filter.keeps(&name) {
            continue;
        }
        written.push(write_member(into, &name, &mut entry)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(path: &Path, members: &[(&str, &str)]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, text) in members {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn zip_members_are_filtered_by_glob() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("loans.zip");
        zip_with(&archive, &[("a.txt", "1|2\n"), ("docs/readme.pdf", "%PDF"), ("q1/b.txt", "3|4\n")]);
        let filter = MemberFilter::new(&["*.txt".to_string()]).unwrap();
        let out = dir.path().join("out");
        let files = extract(&archive, ArchiveFormat::Zip, &filter, &out).unwrap();
        assert_eq!(files, [out.join("a.txt"), out.join("q1/b.txt")]);
        assert_eq!(std::fs::read_to_string(out.join("q1/b.txt")).unwrap(), "3|4\n");
        assert!(!out.join("docs/readme.pdf").exists());

        let none = MemberFilter::new(&["*.csv".to_string()]).unwrap();
        assert_eq!(
            extract(&archive, ArchiveFormat::Zip, &none, &out).unwrap_err(),
            "no member of loans.zip matches members \"*.csv\": it holds a.txt, docs/readme.pdf, q1/b.txt"
        );
    }

    #[test]
    fn tar_gz_members_are_filtered_and_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("loans.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(File::create(&archive).unwrap(), flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            for (name, text) in [("./a.txt", "1\n"), ("b.csv", "2\n")] {
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, name, text.as_bytes()).unwrap();
            }
            tar.into_inner().unwrap().finish().unwrap();
        }
        let out = dir.path().join("out");
        let files = extract(&archive, ArchiveFormat::TarGz, &MemberFilter::new(&["*.txt".into()]).unwrap(), &out).unwrap();
        assert_eq!(files, [out.join("a.txt")]);
        let all = extract(&archive, ArchiveFormat::TarGz, &MemberFilter::default(), &out).unwrap();
        assert_eq!(all.len(), 2);
        assert!(member_path(&out, "../etc/passwd").is_err());
        assert!(member_path(&out, "/etc/passwd").is_err());
        assert!(MemberFilter::new(&["[".into()]).unwrap_err().starts_with("\"[\" is not a valid glob"));
    }
}
