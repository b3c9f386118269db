//go:build scale

package app_test

// manySmallBatches is how many small batches TestManySmallBatchesAtOnce runs
// (go test -tags scale -run TestManySmallBatchesAtOnce ./app/).
const manySmallBatches = 1000
