package flashpipe

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestManifestSeqsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 3, 64, 65, 5000} {
		m := Manifest{BatchID: "b", Generation: 1, Count: 200_000}
		for i := range n {
			m.Seqs = append(m.Seqs, 1+i*37)
		}
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back Manifest
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("%d seqs: round trip changed the manifest", n)
		}
		if n > seqBitmapAbove && len(data) > 200_000/8*2 {
			t.Fatalf("%d seqs: %d bytes, want a bitmap", n, len(data))
		}
	}
	all := Manifest{BatchID: "b", Generation: 1, Count: 200_000}
	for s := 1; s <= all.Count; s++ {
		all.Seqs = append(all.Seqs, s)
	}
	data, _ := json.Marshal(all)
	if len(data) > 40_000 {
		t.Fatalf("a retry of every item of 200,000 takes %d bytes", len(data))
	}
}

// The content hash is part of every stored manifest (default batch ids, conflict
// checks): it must never change for the same items, however they are hashed.
func TestHashItemsIsStable(t *testing.T) {
	items := []Item{
		{Position: 3, Term: "사람", Type: "noun", Metadata: map[string]string{"b": "2", "a": "<1>&"}},
		{Position: 10, Term: "먹다", Type: "verb"},
	}
	const want = "4da4b0476cbc8823834590894c0c4bdd77623a60c9c9b95d03b5f33bbbe95144" // before ItemHasher
	if got := HashItems(items); got != want {
		t.Fatalf("HashItems = %s, want %s", got, want)
	}
	h := NewItemHasher()
	for _, it := range items {
		h.Add(it)
	}
	if got := h.Sum(); got != want {
		t.Fatalf("ItemHasher.Sum = %s, want %s", got, want)
	}
}

func TestManifestValidate(t *testing.T) {
	t.Parallel()
	good := Manifest{BatchID: "b", Count: 5}
	for name, tc := range map[string]struct {
		m    Manifest
		want string
	}{
		"good":                 {good, ""},
		"retry":                {Manifest{BatchID: "b", Count: 5, Generation: 1, Seqs: []int{2, 5}}, ""},
		"replacement":          {Manifest{BatchID: "b", Count: 3, Generation: 2, Base: 2}, ""},
		"bad id":               {Manifest{BatchID: "a.b", Count: 5}, "batch_id"},
		"no items":             {Manifest{BatchID: "b"}, "count 0"},
		"too many":             {Manifest{BatchID: "b", Count: MaxItems + 1}, "count"},
		"negative generation":  {Manifest{BatchID: "b", Count: 1, Generation: -1}, "generation -1"},
		"base after gen":       {Manifest{BatchID: "b", Count: 1, Generation: 1, Base: 2}, "base 2"},
		"seqs in generation 0": {Manifest{BatchID: "b", Count: 5, Seqs: []int{1}}, "seqs"},
		"seq beyond count":     {Manifest{BatchID: "b", Count: 5, Generation: 1, Seqs: []int{2, 6}}, "seqs[1] = 6"},
		"seqs not ascending":   {Manifest{BatchID: "b", Count: 5, Generation: 1, Seqs: []int{3, 3}}, "seqs[1] = 3"},
		"tenant and priority":  {Manifest{BatchID: "b", Count: 1, Tenant: "team-a_2", Priority: -MaxPriority}, ""},
		"tenant with a dot":    {Manifest{BatchID: "b", Count: 1, Tenant: "a.b"}, "tenant: tenant \"a.b\" may contain only"},
		"tenant too long":      {Manifest{BatchID: "b", Count: 1, Tenant: strings.Repeat("t", MaxTenantLength+1)}, "longer than 64"},
		"priority too high":    {Manifest{BatchID: "b", Count: 1, Priority: MaxPriority + 1}, "priority 1001"},
	} {
		err := tc.m.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, tc.want)
		}
	}
	retry := Manifest{BatchID: "b", Count: 5, Generation: 1, Seqs: []int{2, 5}}
	for seq, want := range map[int]bool{1: false, 2: true, 5: true, 6: false} {
		if retry.Wants(seq) != want || good.Wants(seq) != (seq >= 1 && seq <= 5) {
			t.Errorf("Wants(%d)", seq)
		}
	}
}
