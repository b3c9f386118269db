//go:build !scale

package app_test

// manySmallBatches is how many small batches TestManySmallBatchesAtOnce runs.
const manySmallBatches = 200
