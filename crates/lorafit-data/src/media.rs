//! The images, videos and audios a multimodal dataset names, read from their file headers only:
//! image sizes (PNG, JPEG, GIF, BMP, WebP), what PyAV tells LLaMA-Factory about a video (size,
//! duration, frame count, average frame rate) for MP4 / MOV (ISO base media) and AVI files, and
//! an audio's decoded length and rate ([`crate::audio`]).
//! Nothing is decoded; a file that cannot be read is reported, never fatal.
//!
//! Paths resolve as LLaMA-Factory's converter does: `media_dir` (default `dataset_dir`) joined
//! with the row's path when that file exists, else the path as written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use crate::audio::{AudioHeader, probe_audio, probe_audio_of};
use crate::bytes::{be16, be32, be64, le16, le32, read_up_to};
use crate::info::DatasetAttr;
use crate::json::Json;

/// What a video's container header says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoHeader {
    pub width: u64,
    pub height: u64,
    pub seconds: f64,
    pub frames: u64,
    pub average_fps: f64,
}

/// One video of a row: a file, or a list of frame images (LLaMA-Factory takes every frame).
#[derive(Debug, Clone, PartialEq)]
pub enum Video {
    File(VideoHeader),
    Frames { count: u64, width: u64, height: u64 },
}

/// The media of one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowMedia {
    /// (width, height) of each image.
    pub images: Vec<(u64, u64)>,
    pub videos: Vec<Video>,
    pub audios: Vec<AudioHeader>,
}

/// A dataset's media: one entry per row, and the files that could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaScan {
    pub rows: Vec<RowMedia>,
    /// (path, why) of media that were skipped.
    pub unreadable: Vec<(String, String)>,
}

/// An image's (width, height) from its header.
pub fn image_size(path: &Path) -> Result<(u64, u64), String> {
    image_size_of(&mut File::open(path).map_err(|e| e.to_string())?)
}

/// [`image_size`] of any reader (what the fuzz target drives).
pub fn image_size_of<R: Read>(f: &mut R) -> Result<(u64, u64), String> {
    let mut head = vec![0u8; 64 * 1024];
    let n = read_up_to(f, &mut head)?;
    let b = &head[..n];
    let short = || "file too short for its image header".to_string();
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return if b.len() >= 24 {
            Ok((be32(&b[16..]), be32(&b[20..])))
        } else {
            Err(short())
        };
    }
    if b.starts_with(b"GIF8") {
        return if b.len() >= 10 {
            Ok((le16(&b[6..]), le16(&b[8..])))
        } else {
            Err(short())
        };
    }
    if b.starts_with(b"BM") {
        return if b.len() >= 26 {
            Ok((
                le32(&b[18..]),
                (le32(&b[22..]) as i32).unsigned_abs() as u64,
            ))
        } else {
            Err(short())
        };
    }
    if b.len() >= 32 && b.starts_with(b"RIFF") && &b[8..12] == b"WEBP" {
        return match &b[12..16] {
            b"VP8 " => Ok((le16(&b[26..]) & 0x3fff, le16(&b[28..]) & 0x3fff)),
            b"VP8L" => {
                let v = le32(&b[21..]);
                Ok(((v & 0x3fff) + 1, ((v >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Ok((
                (le32(&b[24..]) & 0xff_ffff) + 1,
                (le32(&b[27..]) & 0xff_ffff) + 1,
            )),
            _ => Err("unknown WebP chunk".into()),
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        return jpeg_size(f, b);
    }
    Err("not a PNG, JPEG, GIF, BMP or WebP image".into())
}

/// JPEG: walk the markers to the first start-of-frame (SOF0–SOF15 but DHT, JPG, DAC).
fn jpeg_size<R: Read>(f: &mut R, head: &[u8]) -> Result<(u64, u64), String> {
    let mut data = head.to_vec();
    let mut i = 2;
    loop {
        while i + 9 >= data.len() {
            let mut more = vec![0u8; 64 * 1024];
            let n = read_up_to(f, &mut more)?;
            if n == 0 {
                return Err("no JPEG frame header".into());
            }
            data.extend_from_slice(&more[..n]);
        }
        if data[i] != 0xff {
            return Err("broken JPEG marker".into());
        }
        let marker = data[i + 1];
        if marker == 0xff {
            i += 1;
            continue;
        }
        if matches!(marker, 0xd8 | 0x01 | 0xd0..=0xd7) {
            i += 2;
            continue;
        }
        let len = be16(&data[i + 2..]) as usize;
        if matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            return Ok((be16(&data[i + 7..]), be16(&data[i + 5..])));
        }
        i += 2 + len;
    }
}

/// A video's header: ISO base media (MP4, MOV, M4V, 3GP) or AVI.
pub fn probe_video(path: &Path) -> Result<VideoHeader, String> {
    probe_video_of(&mut File::open(path).map_err(|e| e.to_string())?)
}

/// [`probe_video`] of any seekable reader (what the fuzz target drives).
pub fn probe_video_of<R: Read + Seek>(f: &mut R) -> Result<VideoHeader, String> {
    let mut head = [0u8; 12];
    let n = read_up_to(f, &mut head)?;
    if n >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        return avi(f);
    }
    if n >= 8
        && matches!(
            &head[4..8],
            b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip"
        )
    {
        return iso_bmff(f);
    }
    Err("not an MP4 / MOV or AVI file (other containers are not read)".into())
}

/// Top-level boxes until `moov`, then its video track's `mdhd`, `stsd` and `stsz`.
fn iso_bmff<R: Read + Seek>(f: &mut R) -> Result<VideoHeader, String> {
    let len = f.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let mut pos = 0u64;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
        let mut h = [0u8; 16];
        read_up_to(f, &mut h)?;
        let (mut size, kind) = (be32(&h), [h[4], h[5], h[6], h[7]]);
        let mut header = 8;
        if size == 1 {
            size = be64(&h[8..]);
            header = 16;
        } else if size == 0 {
            size = len - pos;
        }
        if size < header || size > len - pos {
            return Err(format!("broken box at byte {pos}"));
        }
        if &kind == b"moov" {
            if size > 256 << 20 {
                return Err("moov box over 256 MiB".into());
            }
            let mut moov = vec![0u8; (size - header) as usize];
            f.seek(SeekFrom::Start(pos + header))
                .map_err(|e| e.to_string())?;
            let n = read_up_to(f, &mut moov)?;
            moov.truncate(n);
            return moov_video(&moov);
        }
        pos += size;
    }
    Err("no moov box".into())
}

/// (type, body) of each box in `b`.
fn boxes(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 8 <= b.len() {
        let mut size = be32(&b[i..]) as usize;
        let kind = [b[i + 4], b[i + 5], b[i + 6], b[i + 7]];
        let mut header = 8;
        if size == 1 && i + 16 <= b.len() {
            size = be64(&b[i + 8..]) as usize;
            header = 16;
        } else if size == 0 {
            size = b.len() - i;
        }
        if size < header || size > b.len() - i {
            break;
        }
        out.push((kind, &b[i + header..i + size]));
        i += size;
    }
    out
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(b)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, v)| v)
}

fn moov_video(moov: &[u8]) -> Result<VideoHeader, String> {
    for (kind, trak) in boxes(moov) {
        if &kind != b"trak" {
            continue;
        }
        let Some(mdia) = child(trak, b"mdia") else {
            continue;
        };
        let is_video = child(mdia, b"hdlr").is_some_and(|h| h.len() >= 12 && &h[8..12] == b"vide");
        if !is_video {
            continue;
        }
        let mdhd = child(mdia, b"mdhd").ok_or("video track without mdhd")?;
        let (timescale, duration) = match mdhd.first() {
            Some(1) if mdhd.len() >= 32 => (be32(&mdhd[20..]), be64(&mdhd[24..])),
            Some(0) if mdhd.len() >= 20 => (be32(&mdhd[12..]), be32(&mdhd[16..])),
            _ => return Err("broken mdhd".into()),
        };
        let stbl = child(mdia, b"minf")
            .and_then(|m| child(m, b"stbl"))
            .ok_or("video track without a sample table")?;
        // stsd: version/flags, entry count, then a visual sample entry (size, format, 6 reserved,
        // data ref, 16 pre-defined/reserved, width, height).
        let stsd = child(stbl, b"stsd").ok_or("video track without stsd")?;
        if stsd.len() < 8 + 36 {
            return Err("broken stsd".into());
        }
        let entry = &stsd[8..];
        let (width, height) = (be16(&entry[32..]), be16(&entry[34..]));
        let frames = match child(stbl, b"stsz") {
            Some(z) if z.len() >= 12 => be32(&z[8..]),
            _ => match child(stbl, b"stz2") {
                Some(z) if z.len() >= 12 => be32(&z[8..]),
                _ => 0,
            },
        };
        if timescale == 0 {
            return Err("mdhd timescale 0".into());
        }
        let seconds = duration as f64 / timescale as f64;
        return Ok(VideoHeader {
            width,
            height,
            seconds,
            frames,
            average_fps: if seconds > 0.0 {
                frames as f64 / seconds
            } else {
                0.0
            },
        });
    }
    Err("no video track".into())
}

/// AVI: the first video stream header (`strh` with `vids`) and its `strf` bitmap header.
fn avi<R: Read + Seek>(f: &mut R) -> Result<VideoHeader, String> {
    let mut hdr = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(12)).map_err(|e| e.to_string())?;
    let n = read_up_to(f, &mut hdr)?;
    let b = &hdr[..n];
    // Scan the chunks of LIST hdrl / LIST strl for strh(vids) followed by strf.
    let mut i = 0usize;
    let mut video: Option<(u64, u64, u64)> = None; // scale, rate, length
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let size = le32(&b[i + 4..]) as usize;
        if id == b"LIST" {
            i += 12; // into the list
            continue;
        }
        let body = &b[i + 8..(i + 8).saturating_add(size).min(b.len())];
        if id == b"strh" && body.len() >= 36 && &body[..4] == b"vids" && video.is_none() {
            video = Some((le32(&body[20..]), le32(&body[24..]), le32(&body[32..])));
        } else if id == b"strf" && body.len() >= 12 {
            if let Some((scale, rate, length)) = video {
                if scale == 0 || rate == 0 {
                    return Err("AVI stream with a zero frame rate".into());
                }
                let (w, h) = (
                    le32(&body[4..]),
                    (le32(&body[8..]) as i32).unsigned_abs() as u64,
                );
                let seconds = length as f64 * scale as f64 / rate as f64;
                return Ok(VideoHeader {
                    width: w,
                    height: h,
                    seconds,
                    frames: length,
                    average_fps: rate as f64 / scale as f64,
                });
            }
        } else if id == b"movi" {
            break;
        }
        i = i.saturating_add(8 + size + size % 2);
    }
    Err("no AVI video stream header".into())
}

/// LLaMA-Factory's `_find_medias`: `media_dir/path` when that file exists, else the path.
fn resolve(media_dir: &Path, p: &str) -> PathBuf {
    let joined = media_dir.join(p);
    if joined.is_file() {
        joined
    } else {
        PathBuf::from(p)
    }
}

fn paths(v: &Json) -> Vec<&Json> {
    match v {
        Json::Array(items) => items.iter().collect(),
        Json::Null => Vec::new(),
        other => vec![other],
    }
}

fn bad(p: &Path, why: String, scan: &mut MediaScan) {
    if scan.unreadable.len() < 100 {
        scan.unreadable.push((p.display().to_string(), why));
    }
}

/// Each file's header, read once however many rows name it (`None`: unreadable, reported once).
struct Seen<T>(std::collections::HashMap<PathBuf, Option<T>>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(std::collections::HashMap::new())
    }
}

impl<T: Copy> Seen<T> {
    fn probe(
        &mut self,
        path: PathBuf,
        read: impl FnOnce(&Path) -> Result<T, String>,
        scan: &mut MediaScan,
    ) -> Option<T> {
        if let Some(known) = self.0.get(&path) {
            return *known;
        }
        let got = match read(&path) {
            Ok(h) => Some(h),
            Err(e) => {
                bad(&path, e, scan);
                None
            }
        };
        self.0.insert(path, got);
        got
    }
}

/// The media of every row of a dataset (at most `max_rows` rows; a file read once per path).
pub fn scan(attr: &DatasetAttr, media_dir: &Path, max_rows: usize) -> crate::Result<MediaScan> {
    let rows = attr.rows()?;
    let mut scan = MediaScan::default();
    let mut seen_image = Seen::default();
    let mut seen_video = Seen::default();
    let mut seen_audio = Seen::default();
    for row in rows.iter().take(max_rows) {
        let mut m = RowMedia::default();
        let column = |c: &Option<String>| c.as_ref().and_then(|c| row.get(c)).map(paths);
        for v in column(&attr.columns.images).into_iter().flatten() {
            if let Json::Str(p) = v
                && let Some(s) = seen_image.probe(resolve(media_dir, p), image_size, &mut scan)
            {
                m.images.push(s);
            }
        }
        for v in column(&attr.columns.videos).into_iter().flatten() {
            match v {
                Json::Str(p) => {
                    if let Some(h) = seen_video.probe(resolve(media_dir, p), probe_video, &mut scan)
                    {
                        m.videos.push(Video::File(h));
                    }
                }
                Json::Array(frames) => {
                    let first = frames.iter().find_map(|x| match x {
                        Json::Str(p) => Some(resolve(media_dir, p)),
                        _ => None,
                    });
                    let size = first.as_ref().map(|p| (p, image_size(p)));
                    match size {
                        Some((_, Ok((width, height)))) => m.videos.push(Video::Frames {
                            count: frames.len() as u64,
                            width,
                            height,
                        }),
                        Some((p, Err(e))) => bad(p, e, &mut scan),
                        None => {}
                    }
                }
                _ => {}
            }
        }
        for v in column(&attr.columns.audios).into_iter().flatten() {
            if let Json::Str(p) = v
                && let Some(h) = seen_audio.probe(resolve(media_dir, p), probe_audio, &mut scan)
            {
                m.audios.push(h);
            }
        }
        scan.rows.push(m);
    }
    Ok(scan)
}
