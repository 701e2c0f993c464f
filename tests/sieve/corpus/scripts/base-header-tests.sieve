require "fileinto";
if header :contains :comparator "i;octet" "Subject" "MAKE MONEY FAST" { fileinto "octet"; }
if header :contains "subject" "make money fast" { fileinto "casemap"; }
if header :is "X-Missing" "" { fileinto "missing-is-empty"; }
if header :contains "Subject" "" { fileinto "subject-contains-empty"; }
if header :matches "Subject" "?have*" { fileinto "q-star"; }
if header :matches "Subject" "*\\*" { fileinto "literal-star"; }
if header :is "from" "coyote@desert.example.org" { fileinto "from-is"; }
