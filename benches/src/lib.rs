//! zcrpc benchmarks: work in progress, see issue 4.
