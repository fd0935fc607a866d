function gp_reply__(dir, err)
  % Ends every command: an error's message and where in the user's code it arose go to
  % dir/error.txt, then a line on stdout that gradproof waits for.
  if ~isempty(err)
    fid = fopen(fullfile(dir, 'error.txt'), 'w');
    fprintf(fid, '%s', err.message);
    for frame = err.stack(:)'
      if ~strncmp(frame.name, 'gp_', 3) && frame.line > 0
        fprintf(fid, '\n  in %s at line %d (%s)', frame.name, frame.line, frame.file);
      end
    end
    fclose(fid);
  end
  disp('__gradproof_done__');
  fflush(stdout);
end
