package stages

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// The fast decoders must agree with encoding/json whenever they accept a document.

func stdStage1(s string) (rawAnalysis, error) {
	var r rawAnalysis
	err := json.Unmarshal([]byte(s), &r)
	return r, err
}

func sameRaw(a, b rawAnalysis) bool {
	// term_number's value is never used: compare presence only.
	if (a.TermNumber == nil) != (b.TermNumber == nil) {
		return false
	}
	a.TermNumber, b.TermNumber = nil, nil
	return reflect.DeepEqual(a, b)
}

var stage1Seeds = []string{
	`{"term":"a","homonyms":null,"korean_keywords":null,"comparison":null,"other_meanings":null}`,
	`{"term":"\u0041\ud83d\ude00\ud800x","ipa":"a\"b\\c\/d\n","pos":null,"homonyms":[null,{"hanja":"男","x":[1,{"y":null}]}],"korean_keywords":["a",null]}`,
	`{"Term":"case"}`,
	`{"term_number":1.5}`,
	`{"term_number":"7","comparison":{"vs":"x","nuance":"y","extra":true}}`,
	`{"term":"bad utf8 ` + "\xff\xfe" + `"}`,
	`{"term":1}`,
	`{"term":"a",}`,
	`{"term":"a"} trailing`,
	`{"korean_keywords":[]}`,
	"{\"term\":\"ctl\x01\"}",
}

func FuzzDecodeStage1Fast(f *testing.F) {
	if b, err := os.ReadFile("testdata/stage1_answer.json"); err == nil {
		f.Add(string(b))
	}
	for _, s := range stage1Seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fast rawAnalysis
		if !decodeStage1Fast(s, &fast) {
			return
		}
		std, err := stdStage1(s)
		if err != nil {
			t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
		}
		if !sameRaw(fast, std) {
			t.Fatalf("fast %+v\n std %+v\nfor %q", fast, std, s)
		}
	})
}

func FuzzDecodeStage2Fast(f *testing.F) {
	if b, err := os.ReadFile("testdata/stage2_answer.json"); err == nil {
		f.Add(string(b))
	}
	f.Add(`{"cards":[{"tab_name":"Scene","front":null,"x":1}],"other":[]}`)
	f.Add(`{"cards":[{"Front":"x"}]}`)
	f.Add(`{"cards":[]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var fast []rawCard
		if !decodeStage2Fast(s, &fast) {
			return
		}
		var std rawCards
		if err := json.Unmarshal([]byte(s), &std); err != nil {
			t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
		}
		if std.Cards == nil || !reflect.DeepEqual(fast, *std.Cards) && !(len(fast) == 0 && len(*std.Cards) == 0) {
			t.Fatalf("fast %+v std %+v for %q", fast, std.Cards, s)
		}
	})
}

func FuzzDecodeInputFast(f *testing.F) {
	f.Add(`{"term_number":3,"term":"가","type":"noun"}`)
	f.Add(`{"term_number":3,"term":"가","type":"noun","analysis":{"term_number":3,"term":"가[ka]","homonyms":[],"korean_keywords":["x"],"comparison":null}}`)
	f.Add(`{"term_number":3,"analysis":null}`)
	f.Fuzz(func(t *testing.T, s string) {
		var fast Input
		if !decodeInputFast(s, &fast) {
			return
		}
		var std Input
		if err := json.Unmarshal([]byte(s), &std); err != nil {
			t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("fast %+v\n std %+v\nfor %q", fast, std, s)
		}
	})
}

func TestFastDecodersRefuseCaseVariants(t *testing.T) {
	t.Parallel()
	var r rawAnalysis
	if decodeStage1Fast(`{"TERM":"x"}`, &r) {
		t.Error("fast stage 1 decoder accepted a case variant key")
	}
	var cards []rawCard
	if decodeStage2Fast(`{"cards":[{"Tab_Name":"Scene"}]}`, &cards) {
		t.Error("fast stage 2 decoder accepted a case variant key")
	}
}
