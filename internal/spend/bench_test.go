package spend_test

import (
	"context"
	"sync"
	"testing"

	"github.com/flashpipe/flashpipe/internal/spend"
)

// BenchmarkReserveSettle measures a reserve and its settle (two compare-and-sets on
// the batch's account) with 4 replicas of 16 workers each contending for one key.
// Run: go test ./internal/spend -run X -bench ReserveSettle -benchtime 4000x
func BenchmarkReserveSettle(b *testing.B) {
	ls := ledgersB(b, 4)
	ctx := context.Background()
	if _, err := ls[0].SetBatchCap(ctx, "b", spend.ByCommand, 1e9); err != nil {
		b.Fatal(err)
	}
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, l := range ls {
		for range 16 {
			wg.Go(func() {
				for range work {
					r, err := l.Reserve(ctx, "b", 0.05)
					if err != nil {
						b.Error(err)
						return
					}
					if err := r.Settle(ctx, 0.01); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}
