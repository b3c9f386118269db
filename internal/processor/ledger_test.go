package processor

import "testing"

// Ledger entries written before the breaker counts ("N") still read, the new ones
// round-trip, and a damaged one is an error, not a silent zero.
func TestLedgerEntryFormat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ledgerEntry
	}{
		{"3", ledgerEntry{releases: 3}},
		{"3 1 2", ledgerEntry{releases: 3, trips: 1, breakerReleases: 2}},
		{"0 2 0", ledgerEntry{trips: 2}},
	} {
		got, err := parseLedger([]byte(c.in))
		if err != nil || got != c.want {
			t.Errorf("parseLedger(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if back, err := parseLedger(got.format()); err != nil || back != got {
			t.Errorf("%+v: format %q reads back as %+v, %v", got, got.format(), back, err)
		}
	}
	for _, bad := range []string{"", "x", "1 2", "1 2 x"} {
		if e, err := parseLedger([]byte(bad)); err == nil {
			t.Errorf("parseLedger(%q) = %+v, want an error", bad, e)
		}
	}
}
