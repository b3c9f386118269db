// Command genbatch writes a large synthetic batch CSV, for measuring submit:
//
//	go run ./scripts/genbatch -n 1000000 -o /tmp/batch-1m.csv
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flashpipe/flashpipe/internal/testutil/batchgen"
)

func main() {
	var cfg batchgen.Config
	flag.IntVar(&cfg.Items, "n", 1_000_000, "number of items")
	flag.BoolVar(&cfg.Shuffle, "shuffle", false, "write the rows in a random order")
	flag.Int64Var(&cfg.Gap, "gap", 1, "distance between consecutive positions")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed of -shuffle")
	out := flag.String("o", "", "output file (required)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genbatch: -o is required")
		os.Exit(2)
	}
	f, err := os.Create(*out)
	if err == nil {
		err = batchgen.WriteCSV(f, cfg)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genbatch:", err)
		os.Exit(1)
	}
}
