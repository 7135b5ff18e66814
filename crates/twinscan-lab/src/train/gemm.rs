//! Matrix multiply on strided `f32` slices through the `gemm` crate (the kernel candle itself
//! uses), with the bounds checks its raw-pointer interface leaves to the caller.

/// A read-only matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows x cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix view past its slice");
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), `dst` row-major. Single-threaded: callers
/// parallelise over images, which keeps every thread on its own cache-sized problem.
pub(super) fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(b.rows == k && dst.len() == m * n, "matmul shapes {m}x{k} * {}x{n} into {}", b.rows, dst.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let stride = |x: usize| x as isize;
    // SAFETY: `Mat::new` checked that every element a view can address lies in its slice (a
    // transpose addresses the same elements), `dst` holds exactly m x n values, and the borrows
    // guarantee `dst` aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            a.data.as_ptr(),
            stride(a.cs),
            stride(a.rs),
            b.data.as_ptr(),
            stride(b.cs),
            stride(b.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum()).collect()
    }

    #[test]
    fn products_and_transposes_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![9.0; m * n];
        matmul(&mut got, Mat::new(&a, m, k), Mat::new(&b, k, n), false);
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-5));

        // (b^T a^T)^T = a b, through transposed views of the same slices.
        let mut got_t = vec![0.0; n * m];
        matmul(&mut got_t, Mat::new(&b, k, n).t(), Mat::new(&a, m, k).t(), false);
        for i in 0..m {
            for j in 0..n {
                assert!((got_t[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
        matmul(&mut got, Mat::new(&a, m, k), Mat::new(&b, k, n), true);
        assert!(got.iter().zip(&want).all(|(g, w)| (g - 2.0 * w).abs() < 1e-5));
    }
}
