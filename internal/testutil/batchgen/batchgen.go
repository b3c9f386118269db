// Package batchgen writes large synthetic batch files for memory and throughput
// measurements (the soak tests and scripts/genbatch).
package batchgen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
)

// Config says what to write.
type Config struct {
	// Items is how many data rows to write.
	Items int
	// Shuffle writes the rows in a random order (positions unsorted in the file).
	Shuffle bool
	// Gap is the distance between consecutive positions (default 1: 1, 2, 3, ...);
	// 3 gives 3, 6, 9, ...
	Gap int64
	// Seed makes Shuffle reproducible.
	Seed uint64
}

var (
	syllables = []rune("가나다라마바사아자차카타파하거너더러머버서어저처")
	types     = []string{"noun", "verb", "adjective", "adverb", "particle", "pronoun"}
)

// Term returns the distinct Korean-looking term of the i-th item (0-based).
func Term(i int) string {
	var term []rune
	for v := i + 1; v > 0; v /= len(syllables) {
		term = append(term, syllables[v%len(syllables)])
	}
	return string(term)
}

// WriteCSV writes a simple-layout CSV (position,term,type) of cfg.Items rows to w.
// With Shuffle it holds a permutation of the rows (8 bytes each) in memory.
func WriteCSV(w io.Writer, cfg Config) error {
	if cfg.Gap <= 0 {
		cfg.Gap = 1
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.WriteString("position,term,type\n"); err != nil {
		return err
	}
	row := func(i int) error {
		_, err := fmt.Fprintf(bw, "%d,%s,%s\n", int64(i+1)*cfg.Gap, Term(i), types[i%len(types)])
		return err
	}
	if cfg.Shuffle {
		r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
		for _, i := range r.Perm(cfg.Items) {
			if err := row(i); err != nil {
				return err
			}
		}
	} else {
		for i := range cfg.Items {
			if err := row(i); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}
