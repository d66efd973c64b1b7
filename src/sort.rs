//! Sorting for the cold paths (listings, the status page, recovery, configuration, the
//! bench) with one compiled sort for the whole binary.
//!
//! Each `slice::sort_by` with its own element type or closure compiles its own copy of the
//! standard library's sort, 3 to 8 KB each on aarch64: the 22 copies were 103 KB of the
//! static binary. These functions sort a list of indices through a comparator behind a
//! `&dyn`, so there is one copy of the sort, and then move the elements into place.
//! Each comparison costs an indirect call: fine for listings, not for the message path.

use std::cmp::Ordering;

/// Sorts `v` by `cmp`, stably (equal elements keep their order), as `slice::sort_by` does.
pub fn sort_by<T>(v: &mut [T], cmp: impl Fn(&T, &T) -> Ordering) {
    if v.len() < 2 {
        return;
    }
    let mut idx: Vec<usize> = (0..v.len()).collect();
    sort_indices(&mut idx, &|a, b| cmp(&v[a], &v[b]));
    permute(v, idx);
}

/// Sorts `v` in ascending order, stably.
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, T::cmp);
}

/// Sorts `v` by the key `key` gives each element, stably.
pub fn sort_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    sort_by(v, |a, b| key(a).cmp(&key(b)));
}

/// Keeps the first `n` elements of `v` by `cmp`, sorted, and drops the rest. It selects
/// before it sorts, so the cost grows with `len + n log n`, not with a sort of the whole
/// list. Equal elements may come in any order.
pub fn first_n_by<T>(v: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if n == 0 {
        v.clear();
        return;
    }
    if v.len() <= n {
        sort_by(v, cmp);
        return;
    }
    let mut idx: Vec<usize> = (0..v.len()).collect();
    select_indices(&mut idx, n, &|a, b| cmp(&v[a], &v[b]));
    permute(v, idx);
    v.truncate(n);
}

/// The one sort: `idx` ordered by `cmp`, stably.
#[inline(never)]
fn sort_indices(idx: &mut [usize], cmp: &dyn Fn(usize, usize) -> Ordering) {
    idx.sort_by(|&a, &b| cmp(a, b));
}

/// Moves the first `n` of `idx` by `cmp` to its front, sorted (`n < idx.len()`).
#[inline(never)]
fn select_indices(idx: &mut [usize], n: usize, cmp: &dyn Fn(usize, usize) -> Ordering) {
    idx.select_nth_unstable_by(n - 1, |&a, &b| cmp(a, b));
    sort_indices(&mut idx[..n], cmp);
}

/// Rearranges `v` so that position `i` holds the element that was at `idx[i]`
/// (`idx` is a permutation of `0..v.len()`), following each cycle once with swaps.
fn permute<T>(v: &mut [T], mut idx: Vec<usize>) {
    for i in 0..idx.len() {
        if idx[i] == i {
            continue;
        }
        // The element that was at `i` travels along the cycle, one swap at a time,
        // to the position that asks for it.
        let mut cur = i;
        loop {
            let src = idx[cur];
            idx[cur] = cur;
            if src == i {
                break;
            }
            v.swap(cur, src);
            cur = src;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_as_the_standard_sort_does(v in proptest::collection::vec((0u8..8, any::<u16>()), 0..200)) {
            // Keys with many ties, so stability shows.
            let mut want = v.clone();
            want.sort_by_key(|e| e.0);
            let mut got = v.clone();
            sort_by_key(&mut got, |e| e.0);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn keeps_the_first_n(v in proptest::collection::vec(any::<u32>(), 0..200), n in 0usize..220) {
            let mut want = v.clone();
            want.sort_unstable();
            want.truncate(n);
            let mut got = v.clone();
            first_n_by(&mut got, n, |a, b| a.cmp(b));
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn moves_values_that_own_memory() {
        let mut v: Vec<String> = ["pear", "apple", "fig", "banana", "apple"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort(&mut v);
        assert_eq!(v, ["apple", "apple", "banana", "fig", "pear"]);
        first_n_by(&mut v, 2, |a, b| b.len().cmp(&a.len()));
        assert_eq!(v, ["banana", "apple"]);
    }
}
