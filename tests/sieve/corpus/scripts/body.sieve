require ["body", "fileinto"];
if body :raw :contains "MAKE MONEY FAST" { discard; }
if body :content "text" :contains ["missile", "coordinates"] { fileinto "secrets"; }
if body :content "audio/mp3" :contains "" { fileinto "jukebox"; }
if body :text :contains "project schedule" { fileinto "project/schedule"; }
if body :contains "birdseed" { fileinto "birdseed"; }
if body :raw :contains "=C3=BC" { fileinto "qp-raw"; }
if body :contains "Grüße" { fileinto "qp-decoded"; }
