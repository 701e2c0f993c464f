require ["fileinto"];
if header :contains "subject" "Grüße" { fileinto "decoded-subject"; }
if header :contains "from" "Müller" { fileinto "decoded-from"; }
if address :is "to" "andre@example.fr" { fileinto "andre"; }
if header :contains "to" "André" { fileinto "andre-name"; }
