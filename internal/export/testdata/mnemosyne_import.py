# Imports Anki packages with Mnemosyne's Anki2 importer (an independent reader of the
# format) into a fresh Mnemosyne database, one after the other, and prints what the
# database holds after each, as JSON on a last line starting with "RESULT " (Mnemosyne
# prints its progress on stdout). Used by mnemosyne_test.go.
import json
import os
import sys
import tempfile

from mnemosyne.script import Mnemosyne

mn = Mnemosyne(data_dir=tempfile.mkdtemp())
anki2 = [f for f in mn.component_manager.all("file_format") if type(f).__name__ == "Anki2"][0]
out = []
for path in sys.argv[1:]:
    anki2.do_import(os.path.abspath(path))
    db = mn.database()
    con = db.con
    out.append({
        "facts": con.execute("select count() from facts").fetchone()[0],
        "cards": db.card_count(),
        "card_types": [r[0] for r in con.execute("select name from card_types")],
        "tags": sorted(r[0] for r in con.execute("select name from tags")),
        "fronts": sorted(r[0] for r in con.execute("select value from data_for_fact where key = '0'")),
    })
mn.finalise()
print("RESULT " + json.dumps(out, ensure_ascii=False))
