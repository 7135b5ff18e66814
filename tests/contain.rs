//! The containment check: crops and framed copies are found inside their original, other shots
//! of the same scene and flat pictures are not.

mod common;

use image::{imageops, RgbImage};
use twinscan::contain::{containment, ContainmentRule, Thumb};

fn window(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    imageops::crop_imm(img, x, y, w, h).to_image()
}

#[test]
fn crops_and_frames_are_contained_and_other_shots_are_not() {
    let rule = ContainmentRule::default();
    for seed in 1..6 {
        let scene = common::busy_picture(600, 450, seed);
        let original = window(&scene, 100, 75, 400, 300);
        let o = Thumb::of_rgb(&original);
        // 25% off the left, 5% off the right, 20% off the top, then shrunk as a user would.
        let crop = imageops::resize(&window(&original, 100, 60, 280, 240), 140, 120, imageops::FilterType::Triangle);
        let c = containment(&o, &Thumb::of_rgb(&crop));
        assert!(rule.accepts(&c), "seed {seed}: crop {c:?}");
        assert_eq!(c, containment(&Thumb::of_rgb(&crop), &o), "either order");

        let mut framed = RgbImage::from_pixel(460, 340, image::Rgb([255, 255, 255]));
        imageops::replace(&mut framed, &original, 30, 20);
        let f = containment(&o, &Thumb::of_rgb(&framed));
        assert!(rule.accepts(&f), "seed {seed}: framed {f:?}");

        // The next frame of a burst: the same scene moved by a quarter, so a quarter of it is
        // new.
        let burst = window(&scene, 200, 90, 400, 300);
        let b = containment(&o, &Thumb::of_rgb(&burst));
        assert!(!rule.accepts(&b), "seed {seed}: burst {b:?}");

        let other = Thumb::of_rgb(&common::busy_picture(400, 300, seed + 100));
        assert!(!rule.accepts(&containment(&o, &other)), "seed {seed}: another picture");
    }
}

#[test]
fn flat_pictures_cannot_be_placed_and_the_rule_keeps_to_its_limits() {
    let flat = Thumb::of_rgb(&RgbImage::from_pixel(120, 90, image::Rgb([90, 90, 90])));
    let c = containment(&flat, &flat);
    assert_eq!((c.alignment, c.detail), (-1.0, -1.0));

    let original = common::busy_picture(400, 300, 3);
    let crop = window(&original, 80, 60, 240, 180);
    let (o, k) = (Thumb::of_rgb(&original), Thumb::of_rgb(&crop));
    let rule = ContainmentRule::default();
    let t = 0.5;
    assert!(rule.duplicate(0.4, t, 50, &flat, &flat), "within the threshold, nothing else is asked");
    assert!(rule.duplicate(0.9, t, 0, &o, &k), "close enough to check, and contained");
    assert!(!rule.duplicate(0.9, t, rule.neighbours, &o, &k), "not among the nearest");
    assert!(!rule.duplicate(rule.max_distance * t + 0.01, t, 0, &o, &k), "too far to check");
    assert!(!rule.duplicate(0.9, t, 0, &o, &flat), "not contained");
}

#[test]
fn shapes_that_line_up_in_grey_but_not_in_colour_are_not_contained() {
    // Flat graphics: two shapes on a background. A crop keeps their colours; the same crop
    // recoloured (every level maps to another, brighter stays brighter) lines up in grey as
    // well as the crop does.
    let (bg, a, b) = (image::Rgb([0, 0, 200]), image::Rgb([255, 150, 0]), image::Rgb([240, 240, 240]));
    let scene = RgbImage::from_fn(400, 300, |x, y| match (x, y) {
        (100..250, 80..200) => a,
        (270..330, 150..280) => b,
        _ => bg,
    });
    let recolour = |img: &RgbImage| {
        RgbImage::from_fn(img.width(), img.height(), |x, y| match *img.get_pixel(x, y) {
            p if p == a => image::Rgb([0, 220, 0]),
            p if p == b => image::Rgb([255, 255, 120]),
            _ => image::Rgb([200, 0, 0]),
        })
    };
    let crop = window(&scene, 60, 50, 300, 240);
    let rule = ContainmentRule::default();
    let (o, same, other) = (Thumb::of_rgb(&scene), Thumb::of_rgb(&crop), Thumb::of_rgb(&recolour(&crop)));
    let kept = containment(&o, &same);
    assert!(rule.accepts(&kept) && kept.colour < 4.0, "the crop: {kept:?}");
    let grey_only = containment(&o, &other);
    assert!(grey_only.alignment >= rule.alignment && grey_only.detail >= rule.detail, "lines up: {grey_only:?}");
    assert!(grey_only.colour > rule.colour && !rule.contains(&o, &other), "recoloured: {grey_only:?}");
}
