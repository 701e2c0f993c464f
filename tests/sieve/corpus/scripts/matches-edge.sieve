require ["fileinto", "variables"];
if header :matches "subject" "*" { set "s" "${0}"; }
if string :matches "${s}" "*a*a*a*" { fileinto "three-a"; }
if string :matches "abc" "a?c" { fileinto "qmark"; }
if string :matches "abc" "a*?" { fileinto "star-q"; }
if string :matches "" "*" { fileinto "empty-star"; }
if string :matches "a*b" "a\\*b" { fileinto "escaped-star"; }
if string :matches "aXbXc" "*X*" { if string :is "${1}" "a" { fileinto "nongreedy"; } }
