//! Decoding images safely and turning them into the tower's input tensor.

use std::io::Cursor;
use std::path::Path;

use image::{imageops, DynamicImage, ImageError, ImageReader, RgbImage};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tower::{Filter, ModelMeta, ResizeRule};

/// Limits that refuse decompression bombs and absurd files before they exhaust memory.
///
/// ```
/// let strict = twinscan::DecodeLimits { max_pixels: 1 << 20, ..Default::default() };
/// assert!(strict.max_pixels < twinscan::DecodeLimits::default().max_pixels);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest width times height.
    pub max_pixels: u64,
    /// Largest allocation a decoder may make, in bytes.
    pub max_alloc: u64,
    /// Most scans a JPEG may have (a progressive one from an encoder has about ten; zune-jpeg
    /// refuses beyond 100 too).
    pub max_jpeg_scans: u32,
    /// Work a progressive JPEG may ask for per byte of file, as pixels times scans (each scan
    /// revisits every coefficient), above a floor of 2^28: a photo needs under 100 per byte, a
    /// 434 KB file claiming 8192 x 8192 and ten scans over 1,500. This bounds any file under a
    /// megabyte to about two seconds of decoding.
    pub jpeg_work_per_byte: u64,
    /// Memory for all images being decoded at once, across threads, in bytes: each decode
    /// reserves twice its output size (the decoder's buffers and the output) until it returns,
    /// waiting while others hold the rest, and one that alone needs more is refused before
    /// anything is allocated.
    pub max_in_flight: u64,
}

/// The work every progressive JPEG may ask for, whatever its size (a 12-megapixel photo with
/// twenty scans).
const JPEG_WORK_FLOOR: u64 = 1 << 28;

impl Default for DecodeLimits {
    /// 256 MiB files, 32768 px sides, 200 megapixels, 1 GiB of decoder memory: every camera and
    /// scanner image passes, a 1 KB PNG claiming 100k x 100k does not.
    fn default() -> Self {
        DecodeLimits {
            max_file_bytes: 256 << 20,
            max_side: 32_768,
            max_pixels: 200_000_000,
            max_alloc: 1 << 30,
            max_jpeg_scans: 100,
            jpeg_work_per_byte: 512,
            max_in_flight: 2 << 30,
        }
    }
}

fn decode_error(path: &Path, e: ImageError) -> Error {
    let path = path.to_path_buf();
    match e {
        ImageError::Limits(l) => Error::ImageTooLarge { path, reason: l.to_string() },
        ImageError::Unsupported(u) => {
            let reason = format!("unsupported: {u}");
            Error::Decode { path, reason, source: Some(ImageError::Unsupported(u).into()) }
        }
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Decode { path, reason: "truncated file".into(), source: Some(io.into()) }
        }
        other => Error::Decode { path, reason: other.to_string(), source: Some(other.into()) },
    }
}

/// Reads and decodes an image file under `limits`, with its EXIF orientation applied.
pub fn decode_file(path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<DynamicImage> {
    let path = path.as_ref();
    decode_bytes(&read_limited(path, limits, true)?, path, limits)
}

/// Reads and decodes an image file for the model `meta` (see [`decode_for_model`]).
pub fn decode_file_for_model(path: impl AsRef<Path>, limits: &DecodeLimits, meta: &ModelMeta) -> Result<Decoded> {
    let path = path.as_ref();
    decode_for_model(&read_limited(path, limits, true)?, path, limits, meta)
}

/// A file's bytes, refused without reading when it is larger than `limits` allow or is not a
/// regular file (a FIFO or device swapped in cannot hang or exhaust the reader); `follow`:
/// whether a link at the path itself is followed.
pub(crate) fn read_limited(path: &Path, limits: &DecodeLimits, follow: bool) -> Result<Vec<u8>> {
    crate::safe_fs::read_regular(path, follow, limits.max_file_bytes, |len| Error::ImageTooLarge {
        path: path.into(),
        reason: format!("file is {len} bytes, limit {}", limits.max_file_bytes),
    })
}

/// Decodes an in-memory image under `limits`, with its EXIF orientation applied; `path` only
/// names it in errors. The format is recognised from the content, never from the name, except
/// TGA, which has no signature and is recognised by a `.tga` extension.
pub fn decode_bytes(bytes: &[u8], path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<DynamicImage> {
    let path = path.as_ref();
    decode(bytes, path, limits, None).map(|d| d.image)
}

/// An image decoded for a model, with the size it has in its file.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels, EXIF orientation applied; a large JPEG comes at 1/2, 1/4 or 1/8 of its size.
    pub image: DynamicImage,
    /// Width and height at full size, as shown (EXIF orientation applied).
    pub full_size: (u32, u32),
}

/// Decodes an in-memory image as [`decode_bytes`] does, but only as large as the model `meta`
/// needs: a large JPEG is decoded in the DCT domain at 1/8, 1/4 or 1/2 of its size, the
/// smallest that leaves the model's crop four times its input on both sides, which skips most
/// of the work for a photo. Other formats decode whole. The model's embedding of the smaller
/// decode stays close to that of the whole one (measured in docs/benchmarks.md, "Scanning").
///
/// ```no_run
/// # fn main() -> twinscan::Result<()> {
/// let model = twinscan::Model::open("models/photo.onnx")?;
/// let d = twinscan::decode_file_for_model("photo.jpg", model.limits(), model.meta())?;
/// println!("{:?} decoded at {}x{}", d.full_size, d.image.width(), d.image.height());
/// # Ok(())
/// # }
/// ```
pub fn decode_for_model(
    bytes: &[u8],
    path: impl AsRef<Path>,
    limits: &DecodeLimits,
    meta: &ModelMeta,
) -> Result<Decoded> {
    let path = path.as_ref();
    decode(bytes, path, limits, Some(meta))
}

fn decode(bytes: &[u8], path: &Path, limits: &DecodeLimits, meta: Option<&ModelMeta>) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage { path: path.into() });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::io(path, e))?;
    // TGA has no magic bytes: it is recognised by its extension alone.
    if reader.format().is_none() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tga")) {
        reader.set_format(image::ImageFormat::Tga);
    }
    let Some(format) = reader.format() else {
        return Err(Error::UnknownFormat { path: path.into() });
    };
    // The JPEG decoder fills a truncated scan with grey rather than failing; a photo cut short
    // in a copy or a download must be reported, not matched.
    if format == image::ImageFormat::Jpeg && !jpeg_complete(bytes) {
        return Err(Error::Decode {
            path: path.into(),
            reason: "truncated file (no end-of-image marker)".into(),
            source: None,
        });
    }
    if format == image::ImageFormat::Jpeg {
        check_jpeg_work(bytes, path, limits)?;
    }
    let scaled_for = meta.filter(|_| format == image::ImageFormat::Jpeg);
    // Decoders are large parsers of hostile bytes; a panic in one must cost one file, not a scan.
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_checked(reader, bytes, limits, scaled_for)));
    match decoded {
        Ok(result) => result.map_err(|e| decode_error(path, e)),
        Err(_) => {
            Err(Error::Decode { path: path.into(), reason: "decoder panicked on malformed data".into(), source: None })
        }
    }
}

/// Refuses a JPEG whose scans would cost more than `limits` allow, before decoding it.
fn check_jpeg_work(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<()> {
    let Some(l) = crate::jpeg_markers::layout(bytes) else { return Ok(()) };
    let too_much = |reason: String| Err(Error::ImageTooLarge { path: path.into(), reason });
    if l.scans > limits.max_jpeg_scans {
        return too_much(format!("JPEG with {} scans, limit {}", l.scans, limits.max_jpeg_scans));
    }
    let work = u64::from(l.width) * u64::from(l.height) * u64::from(l.scans);
    let allowed = JPEG_WORK_FLOOR.max((bytes.len() as u64).saturating_mul(limits.jpeg_work_per_byte));
    if l.progressive && work > allowed {
        return too_much(format!(
            "progressive JPEG of {}x{} in {} scans from {} bytes: {work} pixel-scans, limit {allowed}",
            l.width,
            l.height,
            l.scans,
            bytes.len()
        ));
    }
    Ok(())
}

/// Whether an end-of-image marker follows the last start-of-scan. Entropy-coded data never holds
/// a bare `FF` byte (it is stuffed as `FF 00`), so both markers are unambiguous there; trailing
/// bytes after the end marker, which many cameras write, are allowed.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// `meta` is set only for a JPEG that may be decoded scaled for that model.
fn decode_checked(
    mut reader: ImageReader<Cursor<&[u8]>>,
    bytes: &[u8],
    limits: &DecodeLimits,
    meta: Option<&ModelMeta>,
) -> Result<Decoded, ImageError> {
    use image::error::{LimitError, LimitErrorKind};
    use image::ImageDecoder;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ImageError::Limits(LimitError::from_kind(LimitErrorKind::DimensionError)));
    }
    if w == 0 || h == 0 {
        return Err(ImageError::Limits(LimitError::from_kind(LimitErrorKind::DimensionError)));
    }
    // A broken EXIF block should not cost the picture: decode it unrotated.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let scale = meta.and_then(|m| jpeg_scale((w, h), orientation, m));
    // Twice the output: the decoder's own buffers (a GIF's canvas, a WebP's planes) and the
    // image; a scaled JPEG decodes to (k/8)^2 of the pixels.
    let output = decoder.total_bytes().saturating_mul(scale.map_or(64, |k| k * k)) / 64;
    let reservation = crate::decode_budget::reserve(output.saturating_mul(2), limits.max_in_flight)
        .ok_or_else(|| ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory)))?;
    // The scaled decoder is a second parser: when it refuses a file, the full decoder decides.
    let scaled = scale.and_then(|k| decode_jpeg_scaled(bytes, k, limits));
    let mut image = match scaled {
        Some(image) => image,
        None => DynamicImage::from_decoder(decoder)?,
    };
    image.apply_orientation(orientation);
    // The reservation ends with the decode, never later: a caller that keeps many decoded
    // images could otherwise wait on itself.
    drop(reservation);
    Ok(Decoded { image, full_size: oriented((w, h), orientation) })
}

/// The size of a `size` image once `orientation` is applied.
fn oriented(size: (u32, u32), orientation: image::metadata::Orientation) -> (u32, u32) {
    use image::metadata::Orientation::{Rotate270, Rotate270FlipH, Rotate90, Rotate90FlipH};
    match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (size.1, size.0),
        _ => size,
    }
}

/// The fewest eighths of its size (1, 2 or 4) at which a `size` JPEG still gives the model's
/// crop four times its input on both sides; `None` when only the full size does.
fn jpeg_scale(size: (u32, u32), orientation: image::metadata::Orientation, meta: &ModelMeta) -> Option<u64> {
    if meta.preprocess.filter == Filter::Nearest {
        return None; // such a model samples single pixels; an averaged decode would change them
    }
    let (_, _, cw, ch) = crop_rect(oriented(size, orientation), meta);
    let (tw, th) = (meta.input.width as u64, meta.input.height as u64);
    [1, 2, 4].into_iter().find(|&k| u64::from(cw) * k >= 32 * tw && u64::from(ch) * k >= 32 * th)
}

/// Decodes a JPEG at `k / 8` of its size, or `None` when this decoder cannot (an unusual
/// colour format, a stream it rejects).
fn decode_jpeg_scaled(bytes: &[u8], k: u64, limits: &DecodeLimits) -> Option<DynamicImage> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let eighths = |len: u16| (u64::from(len) * k).div_ceil(8) as u16;
    let (w, h) = decoder.scale(eighths(info.width), eighths(info.height)).ok()?;
    let pixels = decoder.decode().ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        jpeg_decoder::PixelFormat::L8 => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        _ => None,
    }
}

fn filter_type(f: Filter) -> imageops::FilterType {
    match f {
        Filter::Nearest => imageops::FilterType::Nearest,
        Filter::Triangle => imageops::FilterType::Triangle,
        Filter::CatmullRom => imageops::FilterType::CatmullRom,
        Filter::Lanczos3 => imageops::FilterType::Lanczos3,
    }
}

/// Drops alpha by compositing over white, so a transparent background reads the same whatever
/// colour the encoder left under it.
pub fn flatten_rgb(img: &DynamicImage) -> RgbImage {
    let converted;
    let rgba = match img {
        _ if !img.color().has_alpha() => return img.to_rgb8(),
        DynamicImage::ImageRgba8(rgba) => rgba,
        other => {
            converted = other.to_rgba8();
            &converted
        }
    };
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(3 * rgba.as_raw().len() / 4);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        out.extend(px[..3].iter().map(|&c| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8));
    }
    // Cannot fail: three bytes were pushed for each of the w * h pixels.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// The part of a `(w, h)` image the model's resize rule scales: all of it, or the centred crop
/// with the input's aspect ratio, as `(x0, y0, width, height)`.
fn crop_rect((w, h): (u32, u32), meta: &ModelMeta) -> (u32, u32, u32, u32) {
    let (tw, th) = (u64::from(meta.input.width as u32), u64::from(meta.input.height as u32));
    match meta.preprocess.resize {
        ResizeRule::Stretch => (0, 0, w, h),
        ResizeRule::CenterCrop => {
            // Crop to the target aspect ratio first; scaling the crop equals cropping the scaled.
            let (cw, ch) = if u64::from(w) * th > u64::from(h) * tw {
                (((u64::from(h) * tw) / th).max(1) as u32, h)
            } else {
                (w, ((u64::from(w) * th) / tw).max(1) as u32)
            };
            ((w - cw) / 2, (h - ch) / 2, cw, ch)
        }
    }
}

/// Brings an image to `width x height` by the model's resize rule. Large images are first
/// shrunk with the fast area-averaging thumbnail to twice the target, which keeps quality and
/// makes the cost of a 24-megapixel photo close to that of a small one.
fn resize(img: &RgbImage, meta: &ModelMeta) -> RgbImage {
    let (tw, th) = (meta.input.width as u32, meta.input.height as u32);
    let (x0, y0, cw, ch) = crop_rect(img.dimensions(), meta);
    // The crop stays a view: copying a full-size photo costs as much as shrinking it.
    let view = imageops::crop_imm(img, x0, y0, cw, ch);
    if meta.preprocess.filter != Filter::Nearest && cw >= 4 * tw && ch >= 4 * th {
        let small = imageops::thumbnail(&*view, 2 * tw, 2 * th);
        return imageops::resize(&small, tw, th, filter_type(meta.preprocess.filter));
    }
    if (cw, ch) == (tw, th) {
        return view.to_image();
    }
    imageops::resize(&*view, tw, th, filter_type(meta.preprocess.filter))
}

/// The model input for one image as bytes, channel-major (`C * H * W`): alpha composited over
/// white, converted to the model's channels, resized by its rule. [`write_input`] normalises
/// these; the trainer stores them.
pub fn input_pixels(img: &DynamicImage, meta: &ModelMeta) -> Vec<u8> {
    // A plain RGB image (most photos) is resized where it lies, not copied first.
    let flattened;
    let rgb = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => {
            flattened = flatten_rgb(other);
            &flattened
        }
    };
    let resized = resize(rgb, meta);
    if meta.input.channels == 1 {
        return DynamicImage::ImageRgb8(resized).to_luma8().into_raw();
    }
    let plane = meta.input.width * meta.input.height;
    let mut out = vec![0; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c];
        }
    }
    out
}

/// Writes the model input for one image into `out` (`C * H * W` values, channel-major):
/// [`input_pixels`], then `(p / 255 - mean[c]) / std[c]`.
pub fn write_input(img: &DynamicImage, meta: &ModelMeta, out: &mut [f32]) {
    normalize(&input_pixels(img, meta), meta, out);
}

/// The model inputs of several images, `[n, C, H, W]`, prepared in parallel.
pub(crate) fn write_inputs(images: &[DynamicImage], meta: &ModelMeta) -> Vec<f32> {
    let len = meta.input.channels * meta.input.height * meta.input.width;
    let mut out = vec![0f32; images.len() * len];
    out.par_chunks_mut(len.max(1)).zip(images).for_each(|(o, img)| write_input(img, meta, o));
    out
}

/// `out[j] = (pixels[j] / 255 - mean[c]) / std[c]` for channel-major pixels of one image.
pub fn normalize(pixels: &[u8], meta: &ModelMeta, out: &mut [f32]) {
    let plane = meta.input.width * meta.input.height;
    let (mean, std) = (&meta.preprocess.mean, &meta.preprocess.std);
    for (c, (src, dst)) in pixels.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let (m, s) = (mean[c], std[c]);
        for (o, p) in dst.iter_mut().zip(src) {
            *o = (f32::from(*p) / 255.0 - m) / s;
        }
    }
}
