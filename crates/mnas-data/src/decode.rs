//! Image bytes to RGB8 at a fixed square size.

use image::imageops::FilterType;

use crate::error::DataError;

/// Decodes JPEG/PNG bytes (grey or colour) to `size` x `size` RGB8, HWC. Images of another size are
/// resized (bilinear, aspect ratio not kept: datasets of one size never pay for it).
pub fn decode_rgb(bytes: &[u8], size: usize, name: &str) -> Result<Vec<u8>, DataError> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| DataError::Decode { path: name.to_string(), reason: e.to_string() })?;
    let rgb = img.to_rgb8();
    let rgb = if rgb.width() as usize == size && rgb.height() as usize == size {
        rgb
    } else {
        image::imageops::resize(&rgb, size as u32, size as u32, FilterType::Triangle)
    };
    Ok(rgb.into_raw())
}

/// Width of an encoded image, without decoding the pixels.
pub fn image_size(bytes: &[u8], name: &str) -> Result<usize, DataError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::Decode { path: name.to_string(), reason: e.to_string() })?;
    let (w, _) =
        reader.into_dimensions().map_err(|e| DataError::Decode { path: name.to_string(), reason: e.to_string() })?;
    Ok(w as usize)
}

pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}
