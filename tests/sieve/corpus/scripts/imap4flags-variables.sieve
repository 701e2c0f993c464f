require ["imap4flags", "variables", "fileinto", "relational", "comparator-i;ascii-numeric"];
if size :over 100 { addflag "MyFlags" "Big"; }
if header :contains "From" "coyote" { addflag "MyFlags" "\\Flagged"; }
addflag "MyFlags" ["\\Answered", "$MDNSent"];
fileinto :flags "${MyFlags}" "GrandMa";
if hasflag :count "ge" :comparator "i;ascii-numeric" "MyFlags" "3" { fileinto "three-or-more"; }
set "MyFlags" "\\Flagged $Work";
keep :flags "${MyFlags}";
