require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :is :comparator "i;ascii-numeric" "x-priority" "02" { fileinto "numeric-eq"; }
if header :value "gt" :comparator "i;ascii-numeric" "subject" "999999" { fileinto "infinity"; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "12" { fileinto "score-12"; }
if header :value "lt" :comparator "i;octet" "subject" "B" { fileinto "octet-lt-B"; }
