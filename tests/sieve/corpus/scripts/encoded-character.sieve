require ["encoded-character", "fileinto"];
if header :contains "Subject" "$${hex:24 24}" { fileinto "dollars"; }
if header :contains "subject" "${unicode:47}r${UNICODE:fc}" { fileinto "gruesse"; }
if header :contains "subject" "${hex:400}" { fileinto "never"; }
