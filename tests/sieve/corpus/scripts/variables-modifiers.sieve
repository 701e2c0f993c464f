require ["variables", "fileinto"];
set "a" "juMBlEd lETteRS";
set :length "len" "${a}";
set :lower "lower" "${a}";
set :upperfirst "uf" "${a}";
set :upperfirst :lower "ufl" "${a}";
set :quotewildcard "qw" "Rock*";
if string :is "${len}" "15" { fileinto "len-15"; }
if string :is :comparator "i;octet" "${lower}" "jumbled letters" { fileinto "lower-ok"; }
if string :is :comparator "i;octet" "${uf}" "JuMBlEd lETteRS" { fileinto "uf-ok"; }
if string :is :comparator "i;octet" "${ufl}" "Jumbled letters" { fileinto "ufl-ok"; }
if string :is :comparator "i;octet" "${qw}" "Rock\\*" { fileinto "qw-ok"; }
set "company" "ACME";
if string :is "${BAD${Company}" "${BADACME" { fileinto "bad-company"; }
if string :is "${full}" "" { fileinto "unknown-empty"; }
