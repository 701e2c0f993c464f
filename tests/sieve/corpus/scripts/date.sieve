require ["date", "relational", "fileinto", "comparator-i;ascii-numeric"];
if allof(header :contains "from" "coyote",
         date :value "ge" :originalzone "date" "hour" "09",
         date :value "lt" :originalzone "date" "hour" "17")
{ fileinto "urgent"; }
if anyof(date :is "date" "weekday" "0", date :is "date" "weekday" "6") { fileinto "weekend"; }
if date :is :zone "+0000" "date" "date" "1997-04-01" { fileinto "april-fool-utc"; }
if date :is :originalzone "date" "zone" "-0800" { fileinto "pacific"; }
if date :is :zone "+0530" "date" "iso8601" "1997-04-01T22:36:31+05:30" { fileinto "iso"; }
if date :value "eq" :comparator "i;ascii-numeric" :zone "+0000" "date" "julian" "50539" { fileinto "julian"; }
if date :count "eq" :comparator "i;ascii-numeric" "date" "year" "0" { fileinto "no-date"; }
if currentdate :value "gt" "year" "2000" { fileinto "after-2000"; }
