require ["date", "relational", "index", "fileinto", "variables"];
if date :index 1 :zone "+0000" "received" "time" "06:00:02" { fileinto "first-received"; }
if date :index 1 :last :zone "+0000" "received" "time" "06:00:00" { fileinto "last-received"; }
if date :value "gt" :index 2 :zone "-0500" "received" "iso8601" "1997-02-26T09:00:00-05:00" { fileinto "aftercutoff"; }
if date :matches :zone "+0000" "date" "std11" "*" { set "d" "${0}"; }
if string :contains "${d}" "1997" { fileinto "std11"; }
