require ["fileinto", "variables", "envelope", "relational", "comparator-i;ascii-numeric"];
if envelope :matches "from" "*@*" { set "sender_domain" "${2}"; }
if envelope :matches "to" "*" { set "rcpt" "${1}"; }
if string :matches "${sender_domain}" "*.*" { fileinto "from-${1}"; }
if string :count "eq" :comparator "i;ascii-numeric" ["${rcpt}", "", "x"] "2" { fileinto "count-two"; }
