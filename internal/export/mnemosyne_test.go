package export

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// python is the interpreter of Debian's python3 packages (the one Mnemosyne is
// installed for), not a virtualenv's.
const python = "/usr/bin/python3"

// The package read by another program's importer: Mnemosyne's Anki2 importer (Debian
// package mnemosyne) takes every note with its fields and tags, the note type and the
// deck, and on a second import of a regenerated package updates the same facts by
// GUID instead of adding new ones. (Mnemosyne matches cards by Anki's card id, which
// is a creation time in a package made by flashpipe as in Anki's own, so its second
// import adds cards to the updated facts; Anki matches cards by note and ordinal.)
func TestAPKGReadByMnemosyne(t *testing.T) {
	t.Parallel()
	if err := exec.Command(python, "-c", "import mnemosyne.script").Run(); err != nil {
		t.Skipf("Mnemosyne is not installed (apt-get install --no-install-recommends mnemosyne): %v", err)
	}
	rs := results(9)
	dir := t.TempDir()
	v1 := dir + "/v1.apkg"
	if err := os.WriteFile(v1, writeAll(t, "apkg", Options{Deck: "Vocab", TempDir: dir}, rs), 0o644); err != nil {
		t.Fatal(err)
	}
	rs[1].Cards[0].Front, rs[1].Generation = "a new front", 1
	v2 := dir + "/v2.apkg"
	if err := os.WriteFile(v2, writeAll(t, "apkg", Options{Deck: "Vocab", TempDir: dir}, rs), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "testdata/mnemosyne_import.py", v1, v2)
	cmd.Env = append(os.Environ(), "QT_QPA_PLATFORM=offscreen", "HOME="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Mnemosyne's import: %v\n%s", err, stderr.String())
	}
	var got []struct {
		Facts, Cards int
		CardTypes    []string `json:"card_types"`
		Tags         []string
		Fronts       []string
	}
	_, result, _ := strings.Cut(string(out), "\nRESULT ")
	if err := json.Unmarshal([]byte(result), &got); err != nil || len(got) != 2 {
		t.Fatalf("%v: %s", err, out)
	}
	first, second := got[0], got[1]
	if first.Facts != 21 || first.Cards != 21 || !slices.Equal(first.CardTypes, []string{NoteTypeName}) {
		t.Fatalf("first import: %d facts, %d cards, card types %q; want 21, 21, [%s]", first.Facts, first.Cards, first.CardTypes, NoteTypeName)
	}
	for _, tag := range []string{"Vocab", "term:단어1", "pos:noun", "card:usage-comparison", "metaphor:big_red_kettle"} {
		if !slices.Contains(first.Tags, tag) {
			t.Errorf("tags %q lack %q", first.Tags, tag)
		}
	}
	if plain(first.Fronts[0]) != "#1 front of Hanja\twith a tab" {
		t.Errorf("first front %q", first.Fronts[0])
	}
	if second.Facts != 21 || !slices.Contains(second.Fronts, "a new front") {
		t.Fatalf("second import: %d facts, fronts %q; want the 21 facts, one updated", second.Facts, second.Fronts)
	}
}
